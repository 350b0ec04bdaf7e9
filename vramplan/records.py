"""Measured rows: one stable schema for traces and GPU profiles, written atomically, read back as pandas.

A row is one scenario run once: its knobs, where it ran (provenance), what the planner predicted for it and
what was measured. Traces (fake tensors, no GPU) fill the tensor-level columns; GPU profiles fill the torch
and NVML columns too. A measurement that could not be taken is empty (NaN), never zero.

Files are CSV or parquet (by suffix). ``append_rows`` rewrites the whole file through a temporary file in the
same folder and ``os.replace``, so a crash or Ctrl-C leaves either the old file or the new one, never half.

Example::

    rows = [row_from(breakdown, source="trace", measured={...}, env={...})]
    append_rows("scenarios/measured/trace-2026-11.csv", rows)
    df = read_records(["scenarios/measured/trace-2026-11.csv"])
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from .errors import VramplanError
from .plan import COMPONENTS

KNOBS = (
    "model", "method", "dtype", "quant", "double_quant", "blocksize", "kbit_prep", "rank", "alpha", "dropout",
    "targets", "adapter_dtype", "optimizer", "grad_ckpt", "attn", "autocast", "seq", "batch", "gpus", "shard",
)
PROVENANCE = (
    "source", "device", "gpu_memory_bytes", "driver", "cuda", "torch", "transformers", "peft", "bitsandbytes",
    "date",
)
PEAKS = ("peak_bytes", "peak_reserved_bytes", "peak_allocated_bytes", "peak_tensor_bytes")
PREDICTED = tuple(f"pred_{c}" for c in COMPONENTS) + tuple(f"pred_{p}" for p in PEAKS) + ("pred_peak_phase",)
MEASURED = (
    tuple(f"meas_{c}" for c in COMPONENTS) + tuple(f"meas_{p}" for p in PEAKS)
    + ("meas_peak_phase", "meas_loaded_bytes", "meas_context_bytes", "step_time_s", "tokens_per_s", "steps")
)
STATUS = ("status", "error", "scenario_key", "env_key")
COLUMNS = KNOBS + PROVENANCE + PREDICTED + MEASURED + STATUS

INT_COLUMNS = frozenset(
    ("blocksize", "rank", "seq", "batch", "gpus", "gpu_memory_bytes", "steps")
    + tuple(c for c in PREDICTED if c != "pred_peak_phase")
    + tuple(c for c in MEASURED if c.startswith("meas_") and c != "meas_peak_phase")
)
BOOL_COLUMNS = frozenset(("double_quant", "kbit_prep", "grad_ckpt", "autocast"))
FLOAT_COLUMNS = frozenset(("alpha", "dropout", "step_time_s", "tokens_per_s"))
STATUSES = ("ok", "oom", "error")


class RecordsError(VramplanError):
    """A measurement file that cannot be read or written."""


def knobs_of(scenario) -> dict:
    """The knob columns of a Scenario."""
    r, w = scenario.recipe, scenario.workload
    return {
        "model": scenario.model.name, "method": r.method, "dtype": r.dtype, "quant": r.quant,
        "double_quant": r.double_quant, "blocksize": r.blocksize, "kbit_prep": r.kbit_prep, "rank": r.rank,
        "alpha": float(r.alpha), "dropout": float(r.dropout), "targets": ",".join(r.targets),
        "adapter_dtype": r.adapter_dtype, "optimizer": r.optimizer, "grad_ckpt": r.grad_ckpt, "attn": r.attn,
        "autocast": r.autocast, "seq": w.seq, "batch": w.batch, "gpus": w.gpus, "shard": w.shard,
    }


def predicted_of(breakdown) -> dict:
    """The pred_* columns of a Breakdown."""
    out = {f"pred_{c}": int(breakdown.components[c]) for c in COMPONENTS}
    for p in PEAKS:
        out[f"pred_{p}"] = int(getattr(breakdown, p))
    out["pred_peak_phase"] = breakdown.peak_phase
    return out


def _digest(values: dict) -> str:
    text = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def scenario_key(knobs: dict) -> str:
    """A short stable id of a scenario's knobs (a suite re-run skips rows with the same key and env_key)."""
    return _digest({k: knobs.get(k) for k in KNOBS})


def env_key(env: dict) -> str:
    """A short stable id of where a row was measured (source, device, driver, library versions; not the date)."""
    return _digest({k: env.get(k) for k in PROVENANCE if k != "date"})


def row_from(breakdown, *, env: dict, measured: dict, status: str = "ok", error: str = "") -> dict:
    """One complete row: knobs of the breakdown's scenario, provenance, prediction, measurement, status."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, not {status!r}")
    unknown = set(measured) - set(MEASURED)
    if unknown:
        raise ValueError(f"unknown measured columns: {sorted(unknown)}")
    knobs = knobs_of(breakdown.scenario)
    row = dict.fromkeys(COLUMNS)
    row.update(knobs)
    row.update({k: env.get(k) for k in PROVENANCE})
    row.update(predicted_of(breakdown))
    row.update(measured)
    row.update(status=status, error=" ".join(str(error).split()), scenario_key=scenario_key(knobs),
               env_key=env_key(env))
    return row


def to_frame(rows):
    """Rows (dicts) as a DataFrame with exactly COLUMNS, in order, with nullable integer/boolean dtypes."""
    import pandas as pd

    df = pd.DataFrame(list(rows), columns=list(COLUMNS))
    return _typed(df)


def _typed(df):
    import pandas as pd

    for c in df.columns:
        if c in INT_COLUMNS:
            df[c] = pd.to_numeric(df[c], errors="raise").round().astype("Int64")
        elif c in BOOL_COLUMNS:
            df[c] = df[c].map(_as_bool).astype("boolean")
        elif c in FLOAT_COLUMNS:
            df[c] = pd.to_numeric(df[c], errors="raise").astype("float64")
        else:
            df[c] = df[c].astype("string")
    return df


def _as_bool(v):
    if v is None or (isinstance(v, float) and v != v):
        return None
    if isinstance(v, str):
        low = v.strip().lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        if low in ("", "nan", "<na>"):
            return None
        raise ValueError(f"not a boolean: {v!r}")
    return bool(v)


def _check_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise RecordsError(f"{path}: measurement files are .csv or .parquet; name the file e.g. {path.stem}.csv")
    return suffix


def read_records(paths) -> "pd.DataFrame":  # noqa: F821
    """Read one or more measurement files into one DataFrame with the stable schema.

    Missing columns (files from an older schema) come back empty; unknown extra columns are an error, so a
    file from somewhere else is not silently misread.
    """
    import pandas as pd

    frames = []
    for p in [Path(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]:
        suffix = _check_suffix(p)
        if not p.is_file():
            raise RecordsError(f"{p}: no such measurement file; list them with: ls scenarios/measured/")
        try:
            df = pd.read_csv(p, dtype=str, keep_default_na=True) if suffix == ".csv" else pd.read_parquet(p)
        except Exception as exc:  # pandas raises many types for a broken file
            raise RecordsError(f"{p}: not a readable {suffix[1:]} file ({type(exc).__name__}: {exc})") from None
        extra = [c for c in df.columns if c not in COLUMNS]
        if extra:
            raise RecordsError(f"{p}: not a vramplan measurement file (unknown columns {extra[:4]})")
        for c in COLUMNS:
            if c not in df.columns:
                df[c] = None
        try:
            frames.append(_typed(df[list(COLUMNS)].copy()))
        except (ValueError, TypeError) as exc:
            raise RecordsError(f"{p}: a column has a value of the wrong type ({exc})") from None
    if not frames:
        return to_frame([])
    return pd.concat(frames, ignore_index=True)


def append_rows(path, rows) -> int:
    """Append rows to a CSV/parquet file atomically; returns the number of rows in the file afterwards."""
    import pandas as pd

    path = Path(path)
    suffix = _check_suffix(path)
    new = to_frame(rows)
    old = read_records([path]) if path.exists() else None
    df = new if old is None or old.empty else pd.concat([old, new], ignore_index=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        if suffix == ".csv":
            df.to_csv(tmp, index=False)
        else:
            df.to_parquet(tmp, index=False)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a measurement file is an ordinary file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return len(df)


def done_keys(path) -> set:
    """(scenario_key, env_key) pairs already in a file with status ok or oom: what a suite re-run can skip."""
    path = Path(path)
    if not path.exists():
        return set()
    df = read_records([path])
    df = df[df["status"].isin(["ok", "oom"])]
    return set(zip(df["scenario_key"], df["env_key"]))
