"""The vectorized grid equals the scalar planner, row for row."""

from dataclasses import replace

import pytest

np = pytest.importorskip("numpy")

from vramplan.gpus import resolve_gpu  # noqa: E402
from vramplan.grid import plan_grid  # noqa: E402
from vramplan.models import load_model  # noqa: E402
from vramplan.plan import COMPONENTS, plan_scenario  # noqa: E402
from vramplan.spec import Recipe, Scenario, Workload  # noqa: E402


@pytest.mark.parametrize("name", ["8b", "7b", "9b", "3.8b", "47b", "0.5b"])
@pytest.mark.parametrize("recipe", [
    Recipe.default("qlora"),
    Recipe.default("lora"),
    replace(Recipe.default("qlora"), grad_ckpt=False, optimizer="paged_adamw_8bit", dropout=0.0),
    replace(Recipe.default("lora"), autocast=False, attn="eager", optimizer="adamw_torch"),
    Recipe.default("full"),
], ids=["qlora", "lora", "qlora-nogc-8bit", "lora-eager-foreach", "full"])
def test_grid_equals_scalar(name, recipe):
    shape, gpu = load_model(name), resolve_gpu("h100")
    if shape.is_moe:
        recipe = replace(recipe, dropout=0.0)  # peft refuses dropout on fused experts
    rng = np.random.default_rng(0)
    seq = rng.choice([1, 77, 512, 2048, 4096, 8192, 32768], size=40)
    batch = rng.integers(1, 9, size=40)
    rank = rng.choice([1, 8, 16, 64, 256], size=40)
    cols = plan_grid(shape, recipe, seq=seq, batch=batch, rank=rank, gpu=gpu)
    for k in range(40):
        b = plan_scenario(Scenario(shape, replace(recipe, rank=int(rank[k])), Workload(int(seq[k]), int(batch[k])), gpu))
        for c in COMPONENTS:
            assert cols[c][k] == b.components[c], (k, c)
        assert cols["peak_bytes"][k] == b.peak_bytes
        assert cols["peak_reserved_bytes"][k] == b.peak_reserved_bytes
        assert cols["peak_allocated_bytes"][k] == b.peak_allocated_bytes
        assert cols["peak_phase"][k] == b.peak_phase
        assert bool(cols["fits"][k]) == b.fits


def test_grid_rejects_bad_axes():
    from vramplan.errors import ScenarioError

    with pytest.raises(ScenarioError, match="--seq 0"):
        plan_grid(load_model("8b"), Recipe.default("qlora"), seq=np.array([0, 512]), batch=1)
    with pytest.raises(ScenarioError, match="--rank 0"):
        plan_grid(load_model("8b"), Recipe.default("qlora"), seq=512, batch=1, rank=np.array([0, 8]))
