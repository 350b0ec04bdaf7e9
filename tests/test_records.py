"""The measurement record schema: round trips, atomic appends, skip keys, clear errors."""

from __future__ import annotations

import math

import pytest

from vramplan.models import load_model
from vramplan.plan import plan_scenario
from vramplan.records import (
    COLUMNS, RecordsError, append_rows, done_keys, env_key, read_records, row_from, scenario_key,
)
from vramplan.spec import Recipe, Scenario, Workload

ENV = {"source": "trace", "device": "cpu (fake tensors)", "torch": "2.13.0", "transformers": "5.23.0",
       "peft": "0.21.2", "bitsandbytes": "0.50.2", "date": "2026-11-22"}


def _row(seq=2048, status="ok", **measured):
    b = plan_scenario(Scenario(load_model("8b"), Recipe.default("qlora"), Workload(seq, 1)))
    return b, row_from(b, env=ENV, measured=measured, status=status)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_round_trip_keeps_integer_bytes_exact(tmp_path, suffix):
    b, row = _row(meas_peak_tensor_bytes=13_284_534_272, meas_weights=7_972_422_656)
    path = tmp_path / f"m{suffix}"
    assert append_rows(path, [row]) == 1
    df = read_records([path])
    assert list(df.columns) == list(COLUMNS)
    got = df.iloc[0]
    assert got["pred_peak_bytes"] == b.peak_bytes
    assert got["pred_activations"] == b.components["activations"]
    assert got["meas_peak_tensor_bytes"] == 13_284_534_272
    assert got["model"] == "llama-3.1-8b" and got["method"] == "qlora" and bool(got["kbit_prep"]) is True
    assert got["targets"] == "all-linear" and got["seq"] == 2048
    import pandas as pd
    assert pd.isna(got["meas_gradients"])  # not measured: empty, not 0
    assert math.isnan(got["tokens_per_s"])


def test_append_accumulates_and_skip_keys(tmp_path):
    path = tmp_path / "m.csv"
    _, a = _row(512)
    _, b = _row(1024, status="oom")
    _, c = _row(2048, status="error")
    append_rows(path, [a])
    assert append_rows(path, [b, c]) == 3
    keys = done_keys(path)
    assert (a["scenario_key"], a["env_key"]) in keys and (b["scenario_key"], b["env_key"]) in keys
    assert (c["scenario_key"], c["env_key"]) not in keys  # an error is retried on the next run
    assert [p.name for p in tmp_path.iterdir()] == ["m.csv"]  # no temporary files left behind


def test_keys_ignore_date_but_not_versions():
    knobs = {"model": "x", "seq": 1}
    assert scenario_key(knobs) == scenario_key(dict(knobs))
    assert scenario_key(knobs) != scenario_key({"model": "x", "seq": 2})
    assert env_key(ENV) == env_key(dict(ENV, date="2027-01-01"))
    assert env_key(ENV) != env_key(dict(ENV, torch="2.14.0"))


def test_bad_files_are_one_line_errors(tmp_path):
    with pytest.raises(RecordsError, match="csv or .parquet"):
        read_records([tmp_path / "m.txt"])
    with pytest.raises(RecordsError, match="no such measurement file"):
        read_records([tmp_path / "missing.csv"])
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(RecordsError, match="not a vramplan measurement file"):
        read_records([other])
    with pytest.raises(ValueError):
        _row(status="maybe")


def test_files_get_ordinary_permissions(tmp_path):
    import os

    _, row = _row()
    path = tmp_path / "m.csv"
    append_rows(path, [row])
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
