"""Solvers: the answer fits and one step more does not; equal to a brute-force scan of the grid."""

from dataclasses import replace

import pytest

from vramplan import memory as m
from vramplan.errors import ScenarioError
from vramplan.gpus import catalog, resolve_gpu
from vramplan.models import load_model
from vramplan.plan import plan_scenario
from vramplan.solve import KNOB_LIMITS, max_fit, min_gpus, monotonic_rank_floor, smallest_gpu
from vramplan.spec import GpuSpec, Recipe, Scenario, Workload

GiB = 1024**3


def _scenario(name, method, gpu, **changes):
    recipe = Recipe.default(method)
    if load_model(name).is_moe:
        recipe = replace(recipe, dropout=0.0)
    s = Scenario(load_model(name), recipe, Workload(seq=2048, batch=1), resolve_gpu(gpu))
    return s.with_(**changes) if changes else s


def _peak(s, **changes):
    return plan_scenario(s.with_(**changes)).peak_bytes


CASES = [
    ("0.5b", "lora", "rtx3060"),
    ("0.5b", "qlora", "8gb"),
    ("1b", "qlora", "rtx3080"),
    ("8b", "qlora", "rtx4090"),
    ("8b", "lora", "a100-80gb"),
    ("9b", "qlora", "l4"),  # Gemma 2: eager attention, memory quadratic in seq
    ("47b", "qlora", "a100-80gb"),  # MoE
    ("70b", "qlora", "h100"),
    ("70b", "qlora", "h200"),
]


@pytest.mark.parametrize("name,method,gpu", CASES)
@pytest.mark.parametrize("knob,step", [("seq", 1), ("seq", 256), ("batch", 1), ("rank", 1), ("rank", 8)])
def test_answer_fits_and_one_step_more_does_not(name, method, gpu, knob, step):
    s = _scenario(name, method, gpu)
    cap = s.gpu.memory_bytes
    v = max_fit(s, knob, step=step)
    assert v % step == 0
    if v == 0:
        assert _peak(s, **{knob: step}) > cap
        return
    assert _peak(s, **{knob: v}) <= cap
    if v + step <= KNOB_LIMITS[knob]:
        assert _peak(s, **{knob: v + step}) > cap


def test_known_answers():
    # Llama-3.1-8B QLoRA (tutorial recipe, batch 1) on an RTX 4090 (24,564 MiB as NVML reports it)
    s = _scenario("8b", "qlora", "rtx4090")
    assert max_fit(s, "seq") == 7228
    assert max_fit(s, "seq", step=256) == 7168
    assert max_fit(s, "batch") == 3
    assert max_fit(s, "rank") == 375


def test_explicit_capacity_and_limit():
    s = _scenario("8b", "qlora", "rtx4090")
    cap = 16 * GiB
    v = max_fit(s, "batch", cap)
    assert v >= 1 and _peak(s, batch=v) <= cap < _peak(s, batch=v + 1)
    assert max_fit(s, "batch", limit=2) == 2  # capped by the limit although 3 fits
    assert max_fit(s, "seq", 1 * GiB) == 0  # the 4-bit weights alone are larger


@pytest.mark.parametrize("name,method,gpu", [("0.5b", "lora", "rtx3060"), ("8b", "qlora", "rtx4090"),
                                             ("70b", "qlora", "h200")])
def test_batch_and_rank_equal_brute_force(name, method, gpu):
    np = pytest.importorskip("numpy")
    from vramplan.grid import plan_grid

    s = _scenario(name, method, gpu)
    cap = s.gpu.memory_bytes
    for knob, hi in (("batch", 512), ("rank", KNOB_LIMITS["rank"])):
        values = np.arange(1, hi + 1)
        kw = {"seq": s.workload.seq, "batch": s.workload.batch, "rank": s.recipe.rank, knob: values}
        cols = plan_grid(s.model, s.recipe, gpu=s.gpu, **kw)
        fitting = values[cols["peak_bytes"] <= cap]
        expect = int(fitting.max()) if len(fitting) else 0
        assert max_fit(s, knob, limit=hi) == expect, knob


@pytest.mark.parametrize("name,gpu", [("8b", "rtx4090"), ("9b", "l4")])
def test_seq_equals_brute_force(name, gpu):
    np = pytest.importorskip("numpy")
    from vramplan.grid import plan_grid

    s = _scenario(name, "qlora", gpu)
    values = np.arange(16, 262_145, 16)
    cols = plan_grid(s.model, s.recipe, seq=values, batch=1, gpu=s.gpu)
    fitting = values[cols["peak_bytes"] <= s.gpu.memory_bytes]
    assert max_fit(s, "seq", step=16, limit=262_144) == int(fitting.max())


def test_rank_below_the_8bit_floor_is_scanned():
    # Qwen2.5-0.5B (hidden 896): with 8-bit AdamW an adapter of rank 4 (3584 elements) keeps fp32 state and
    # rank 5 (4480) gets 8-bit state, so the peak falls from rank 4 to rank 5.
    s = _scenario("0.5b", "lora", "rtx3060", optimizer="adamw_8bit")
    assert _peak(s, rank=5) < _peak(s, rank=4)
    floor = monotonic_rank_floor(s)
    assert floor == 32  # k_proj/v_proj lora_B: rank x 128 reaches 4096 at rank 32
    # a capacity between the two peaks: rank 5 fits, rank 4 does not, nothing above 5 fits
    cap = (_peak(s, rank=4) + _peak(s, rank=5)) // 2
    assert _peak(s, rank=6) > cap
    assert max_fit(s, "rank", cap) == 5
    assert monotonic_rank_floor(_scenario("0.5b", "lora", "rtx3060")) == 1  # fp32 AdamW: monotonic


def test_nothing_fits_returns_zero():
    s = _scenario("70b", "lora", "rtx4090")
    for knob in ("seq", "batch", "rank"):
        assert max_fit(s, knob) == 0


@pytest.mark.parametrize("name,method,gpu", [("70b", "qlora", "rtx4090"), ("70b", "lora", "a100-80gb"),
                                             ("70b", "lora", "h100"), ("32b", "lora", "rtx4090"),
                                             ("8b", "lora", "rtx3060"), ("47b", "qlora", "l40s")])
def test_min_gpus_fits_and_one_fewer_does_not(name, method, gpu):
    s = _scenario(name, method, gpu)
    cap = s.gpu.memory_bytes
    n = min_gpus(s, "fsdp")
    assert n is not None and n > 1
    assert _peak(s, gpus=n, shard="fsdp") <= cap
    if n - 1 == 1:
        assert _peak(s, gpus=1, shard="none") > cap
    else:
        assert _peak(s, gpus=n - 1, shard="fsdp") > cap


def test_min_gpus_edge_cases():
    s = _scenario("8b", "qlora", "rtx4090")
    assert min_gpus(s) == 1 and min_gpus(s, "ddp") == 1
    big = _scenario("70b", "qlora", "rtx4090")
    assert min_gpus(big, "ddp") is None  # every DDP replica holds the whole model
    n = min_gpus(big, "fsdp")
    assert n is not None and n > 1
    assert min_gpus(big, "fsdp", limit=n) == n and min_gpus(big, "fsdp", limit=n - 1) is None
    tiny = _scenario("70b", "lora", "rtx3060")
    assert min_gpus(tiny, "fsdp", limit=4) is None
    with pytest.raises(ScenarioError, match="--shard 'none'"):
        min_gpus(s, "none")


def test_smallest_gpu():
    s = _scenario("8b", "qlora", "rtx4090")
    g = smallest_gpu(s)
    assert g is not None and plan_scenario(replace(s, gpu=g)).peak_bytes <= g.memory_bytes
    # every card with less memory does not fit
    for other in catalog():
        if other.memory_bytes < g.memory_bytes:
            assert plan_scenario(replace(s, gpu=other)).peak_bytes > other.memory_bytes, other.id
    assert smallest_gpu(_scenario("70b", "lora", "rtx4090"), [resolve_gpu("rtx4090")]) is None
    custom = [GpuSpec("big", "big", 400 * GiB), GpuSpec("mid", "mid", 200 * GiB)]
    assert smallest_gpu(_scenario("70b", "lora", "rtx4090"), custom).id == "mid"


def test_errors_say_what_to_type():
    s = Scenario(load_model("8b"), Recipe.default("qlora"))
    with pytest.raises(ScenarioError, match="add --gpu"):
        max_fit(s, "seq")
    with pytest.raises(ScenarioError, match="add --gpu"):
        min_gpus(s)
    g = _scenario("8b", "qlora", "rtx4090")
    with pytest.raises(ScenarioError, match="--max batch, --max seq or --max rank"):
        max_fit(g, "gpus")
    with pytest.raises(ScenarioError, match="positive step"):
        max_fit(g, "seq", step=0)
    with pytest.raises(ScenarioError, match=r"--step 256 is above the largest seq to search \(100\)"):
        max_fit(g, "seq", step=256, limit=100)
    with pytest.raises(ScenarioError, match=r"--step 100000 is above the largest batch to search \(65536\)"):
        max_fit(g, "batch", step=100_000)
    with pytest.raises(ScenarioError, match="needs a LoRA method"):
        max_fit(_scenario("8b", "full", "h100"), "rank")
    with pytest.raises(ScenarioError, match="positive GPU memory"):
        max_fit(g, "seq", 0)


# --- multi-GPU memory (per GPU) ----------------------------------------------------------------------------


def test_fsdp_per_gpu_bytes_by_hand():
    # Llama-3.1-8B, bf16 LoRA r=16 all-linear, 4 GPUs, FSDP full shard
    s = Scenario(load_model("8b"), Recipe.default("lora"), Workload(gpus=4, shard="fsdp"))
    b = plan_scenario(s)
    root = 2 * 128256 * 4096 * 2 + 4096 * 2  # embed_tokens + lm_head (bf16) + final norm
    layer = 2 * (2 * 4096 * 4096 + 2 * 1024 * 4096 + 3 * 14336 * 4096 + 2 * 4096)  # q,o + k,v + MLP + 2 norms
    adapters = 4 * 16 * 32 * (4096 + 4096 + 4096 + 1024 + 4096 + 1024 + 4096 + 4096 + 4096 + 14336 + 4096
                                + 14336 + 14336 + 4096)  # fp32 A (r x in) + B (out x r), 7 modules x 32 layers
    assert adapters == 167_772_160
    gathered = root + 2 * (layer + adapters // 32)
    rotary = 2 * 4 * 64
    assert b.detail["fsdp_gathered_bytes"] == gathered == 2_984_288_256
    assert b.components["weights"] == -(-root // 4) + 32 * -(-layer // 4) + rotary + gathered == 6_999_419_392
    assert b.components["adapters"] == adapters // 4
    assert b.detail["fsdp_reduce_scatter_bytes"] == adapters // 32 + adapters // 32 // 4
    one = plan_scenario(s.with_(gpus=1, shard="none"))
    assert b.components["optimizer"] == one.components["optimizer"] // 4  # fused AdamW: 2 moments + step
    assert b.components["activations"] == one.components["activations"]  # each GPU runs its own micro-batch


def test_fsdp_keeps_quant_constants_whole_and_shards_packed_weights():
    s = Scenario(load_model("70b"), Recipe.default("qlora"), Workload())
    one, eight = plan_scenario(s), plan_scenario(s.with_(gpus=8, shard="fsdp"))
    assert eight.components["quant_constants"] == one.components["quant_constants"]
    shards = eight.components["weights"] - eight.detail["fsdp_gathered_bytes"]
    assert abs(shards - one.components["weights"] / 8) < 4096  # ceil per unit and the unsharded buffers


def test_ddp_buckets_copy_the_gradients():
    s = Scenario(load_model("8b"), Recipe.default("lora"), Workload(gpus=2, shard="ddp"))
    b, one = plan_scenario(s), plan_scenario(s.with_(gpus=1, shard="none"))
    grads = 167_772_160  # 41.9 M fp32 adapter gradients
    assert b.detail["ddp_bucket_bytes"] == grads
    assert b.detail["ddp_bucket_count"] == 7  # 25 MiB buckets
    opt_one = next(p for p in one.phases if p.name == "optimizer")
    opt_two = next(p for p in b.phases if p.name == "optimizer")
    assert opt_two.components["gradients"] - opt_one.components["gradients"] == grads
    assert b.components["weights"] == one.components["weights"]  # replicated
    load = next(p for p in b.phases if p.name == "load")
    assert load.components["gradients"] == grads  # the buckets outlive the step


def test_fsdp_per_gpu_peak_never_grows_with_gpus():
    s = Scenario(load_model("70b"), Recipe.default("qlora"), Workload())
    peaks = [plan_scenario(s.with_(gpus=n, shard="fsdp")).peak_bytes for n in range(2, 33)]
    assert all(b <= a for a, b in zip(peaks, peaks[1:]))


def test_fsdp_cpu_offload_by_hand():
    # Llama-3.1-8B bf16 LoRA, 2 GPUs, FSDP with CPU offload: only gathered units and reduce-scatter buffers
    s = Scenario(load_model("8b"), Recipe.default("lora"), Workload(gpus=2, shard="fsdp", offload=True))
    b = plan_scenario(s)
    gathered = 2_984_288_256  # root unit + two layer units with their adapters (test above)
    phases = {p.name: p for p in b.phases}
    # rotary buffers stay on the GPU; at the root's all-gather its buffer sits beside the unsharded copy
    root_moment = b.detail["fsdp_gather_buffer_bytes"] if phases["forward"].where == "root all-gather" else 0
    assert phases["forward"].components["weights"] == 512 + gathered + root_moment
    assert phases["load"].components["weights"] == 512  # between steps nothing is gathered
    for p in b.phases:
        assert p.components["adapters"] == 0 and p.components["optimizer"] == 0
    layer_grads = 167_772_160 // 32
    assert b.detail["fsdp_reduce_scatter_bytes"] == layer_grads + layer_grads // 2
    assert phases["optimizer"].components["gradients"] == 0  # the step runs on the CPU
    # one GPU with offload is FSDP too: the gathered units, nothing else of the model
    one = plan_scenario(s.with_(gpus=1))
    fwd = next(p for p in one.phases if p.name == "forward")
    assert fwd.components["weights"] == 512 + gathered + (
        one.detail["fsdp_gather_buffer_bytes"] if fwd.where == "root all-gather" else 0)
    assert one.peak_bytes < plan_scenario(s.with_(gpus=1, shard="none", offload=False)).peak_bytes


def test_offload_fits_70b_qlora_on_one_24gb_card_and_min_gpus_uses_it():
    s = _scenario("70b", "qlora", "rtx4090", kbit_prep=False)
    assert min_gpus(s, "fsdp") == 4  # without offload
    off = s.with_(shard="fsdp", offload=True)
    assert plan_scenario(off).peak_bytes <= s.gpu.memory_bytes
    assert min_gpus(off, "fsdp") == 1
    with pytest.raises(ScenarioError, match="add --shard fsdp"):
        plan_scenario(s.with_(offload=True))


def test_fsdp_phases_gather_only_during_forward_and_backward():
    s = Scenario(load_model("70b"), Recipe.default("qlora"), Workload(gpus=4, shard="fsdp"))
    b = plan_scenario(s)
    phases = {p.name: p for p in b.phases}
    gathered = b.detail["fsdp_gathered_bytes"]
    root_moment = b.detail["fsdp_gather_buffer_bytes"] if phases["forward"].where == "root all-gather" else 0
    assert phases["forward"].components["weights"] - phases["load"].components["weights"] == gathered + root_moment
    assert b.detail["fsdp_gather_buffer_bytes"] == m.fsdp_root_unit_bytes(s.model, s.recipe)  # the largest unit
    assert phases["optimizer"].components["weights"] == phases["load"].components["weights"]
