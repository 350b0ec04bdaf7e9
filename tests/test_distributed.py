"""torch.distributed FSDP2 (full shard) on two CPU processes (gloo): each rank's tensor memory against the plan.

The same recipe builder as trace and profile, sharded per decoder layer and at the root, one warm-up optimizer
step, then one traced step per rank. Tolerance: the per-GPU tensor-level peak within 5 % (the planner's FSDP
model counts gathered units in their stored dtype and does not follow FSDP2's every buffer); what sits on a
GPU between steps (sharded weights, adapters, optimizer state) to 512-byte rounding.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from profilers.distributed import run_fsdp  # noqa: E402
from vramplan.errors import ScenarioError  # noqa: E402
from vramplan.models import load_config, shape_from_config  # noqa: E402
from vramplan.plan import plan_scenario  # noqa: E402
from vramplan.spec import Recipe, Scenario, Workload  # noqa: E402

pytestmark = pytest.mark.slow


def test_fsdp_two_cpu_ranks_against_the_plan(tmp_path, capsys):
    """`vramplan profile --gpus 2 --shard fsdp --device cpu`: torchrun, two gloo ranks, rows recorded."""
    import json

    from vramplan.cli import main
    from vramplan.records import read_records

    out = tmp_path / "fsdp.csv"
    argv = ["profile", "qwen2.5-0.5b", "--layers", "2", "--seq", "256", "--method", "lora", "--gpus", "2",
            "--shard", "fsdp", "--device", "cpu", "--json", "--out", str(out)]
    assert main(argv) == 0
    (doc,) = json.loads(capsys.readouterr().out)
    cfg = load_config("qwen2.5-0.5b", layers=2)
    shape = shape_from_config(cfg, name="qwen2.5-0.5b (2 layers)")
    b = plan_scenario(Scenario(shape, Recipe.default("lora"), Workload(256, 1, gpus=2, shard="fsdp")))
    assert doc["planned_peak_tensor_bytes_per_gpu"] == b.peak_tensor_bytes
    ranks = doc["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert ranks[0]["peak_bytes"] == ranks[1]["peak_bytes"]  # equal shards
    # each rank holds half the LoRA parameters (FSDP pads odd shards: at most one row more)
    assert abs(ranks[0]["trainable_params_local"] - b.trainable_params / 2) < 0.01 * b.trainable_params
    for r in ranks:
        assert math.isfinite(r["loss"]) and abs(r["loss"] - math.log(shape.vocab_size)) < 0.5
        load = r["phases"]["load"]
        assert abs(load["peak_bytes"] - b.phases[0].tensor_bytes) < 512 * 1000
        for c in ("weights", "adapters", "optimizer"):
            assert abs(load["components"][c] - b.phases[0].components[c]) < 512 * 500, c
        assert abs(b.peak_tensor_bytes - r["peak_bytes"]) / r["peak_bytes"] < 0.05
    df = read_records([out])
    assert list(df["gpus"]) == [2] and list(df["shard"]) == ["fsdp"] and list(df["source"]) == ["profile"]
    assert int(df["meas_peak_tensor_bytes"].iloc[0]) == ranks[0]["peak_bytes"]


def test_qlora_under_fsdp_is_refused_with_a_reason():
    cfg = load_config("qwen2.5-0.5b", layers=1)
    s = Scenario(shape_from_config(cfg, name="q"), replace(Recipe.default("qlora")), Workload(64, 1, gpus=2,
                                                                                           shard="fsdp"))
    with pytest.raises(ScenarioError, match="quant_storage"):
        run_fsdp(s, cfg, nproc=2)
