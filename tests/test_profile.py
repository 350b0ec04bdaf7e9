"""The profiler end to end on CPU (CI), the NVML sampler against a fake NVML, and GPU checks (marked, skipped).

On CPU the profiler runs the whole pipeline a GPU run does: a suite file expanded to scenarios, the model built
by the tracer's builder with real random tensors, warm-up and timed steps, one tracked step, a row per scenario
appended atomically. Its tensor-level bytes must equal the tracer's real mode for the same scenario, exactly.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import replace
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("bitsandbytes")

from profilers.nvml import NvmlDevice, NvmlUnavailableError, Sampler  # noqa: E402
from profilers.profile import (  # noqa: E402
    CheckpointError, ProfileJob, ProfileResult, check_checkpoint, load_checkpoint, profile_env, run, run_isolated,
)
from profilers.suite import SuiteOptions, estimate_seconds, run_suite, suite_items  # noqa: E402
from vramplan.cli import main  # noqa: E402
from vramplan.errors import VramplanError  # noqa: E402
from vramplan.plan import plan_scenario  # noqa: E402
from vramplan.records import COLUMNS, read_records  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning"),
              pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

GiB = 2**30
# a 2-layer GQA Llama: small enough for a CPU step in a fraction of a second, every component non-zero
TINY = dict(model_type="llama", architectures=["LlamaForCausalLM"], hidden_size=64, intermediate_size=128,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=256,
            max_position_embeddings=256, tie_word_embeddings=False, dtype="bfloat16")
SUITE = """\
question: Does the profiler pipeline work end to end on CPU?
model: tiny/config.json
method: [lora, qlora]
seq: 16
batch: 2
"""
CPU = SuiteOptions(device="cpu", warmup=1, steps=1)
NO_GPU = not torch.cuda.is_available()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("profile")
    (root / "tiny").mkdir()
    (root / "tiny" / "config.json").write_text(json.dumps(TINY))
    (root / "suite.yaml").write_text(SUITE)
    return root


@pytest.fixture(scope="module")
def suite_run(folder):
    """The tiny suite measured once on CPU into rows.csv (shared by the tests that read it)."""
    items = suite_items(folder / "suite.yaml")
    out = folder / "rows.csv"
    events = []
    result = run_suite(items, out=out, options=CPU, env=profile_env("cpu"),
                       progress=lambda event, i, item, detail: events.append((event, i)))
    return items, out, result, events


def test_cpu_suite_writes_one_row_per_scenario_with_the_schema(suite_run):
    items, out, result, events = suite_run
    assert [it.scenario.recipe.method for it in items] == ["lora", "qlora"]
    assert events == [("start", 0), ("done", 0), ("start", 1), ("done", 1)]
    assert not result.interrupted and result.skipped == 0
    df = read_records([out])
    assert list(df.columns) == list(COLUMNS)
    assert list(df["status"]) == ["ok", "ok"]
    assert list(df["method"]) == ["lora", "qlora"]
    assert list(df["optimizer"]) == ["adamw", "paged_adamw_32bit"]
    assert set(df["source"]) == {"profile"} and df["device"].iloc[0].startswith("cpu")
    assert list(df["seq"]) == [16, 16] and list(df["batch"]) == [2, 2] and list(df["steps"]) == [1, 1]
    # no allocator and no NVML on CPU: those measurements are empty, never zero
    for col in ("meas_peak_bytes", "meas_peak_reserved_bytes", "meas_peak_allocated_bytes", "meas_context_bytes",
                "meas_overhead", "gpu_memory_bytes"):
        assert df[col].isna().all(), col
    for _, row in df.iterrows():
        assert row["step_time_s"] > 0
        assert row["tokens_per_s"] == pytest.approx(16 * 2 / row["step_time_s"], rel=1e-12)
    # the prediction in the row is the planner's for the same scenario
    for item, (_, row) in zip(items, df.iterrows()):
        b = plan_scenario(item.scenario)
        assert row["pred_peak_bytes"] == b.peak_bytes and row["pred_activations"] == b.components["activations"]


def test_cpu_tensor_bytes_equal_the_trace_real_mode(suite_run):
    from profilers.trace import trace_scenario

    items, out, result, _ = suite_run
    df = read_records([out])
    item, row = items[1], df.iloc[1]  # QLoRA: every component, quant constants included
    tr = trace_scenario(item.scenario, item.config, fake=False)
    assert row["meas_peak_tensor_bytes"] == tr.peak_bytes
    assert row["meas_peak_phase"] == tr.peak_phase
    for c in ("weights", "quant_constants", "adapters", "gradients", "optimizer", "activations"):
        assert row[f"meas_{c}"] == tr.components[c], c
    assert row["meas_loaded_bytes"] == next(p.peak_bytes for p in tr.phases if p.phase == "load")
    timeline = result.measured[1][1].info["tensor_timeline"]
    assert timeline == {p.phase: p.peak_bytes for p in tr.phases}


def test_rerun_skips_rows_of_the_same_scenario_and_environment(suite_run):
    items, out, _, _ = suite_run
    env = profile_env("cpu")

    def must_not_run(job):
        raise AssertionError(f"measured again: {job.scenario.recipe.method}")

    again = run_suite(items, out=out, options=CPU, env=env, runner=must_not_run)
    assert (again.skipped, len(again.measured)) == (2, 0)
    # another environment (a different torch) is another measurement; its rows are appended
    ran = []

    def record(job):
        ran.append(job.scenario.recipe.method)
        return ProfileResult("error", error="test runner: nothing measured")

    other = dict(env, torch="0.0.0-other")
    third = run_suite(items[:1], out=out, options=CPU, env=other, runner=record)
    assert ran == ["lora"] and third.skipped == 0
    df = read_records([out])
    assert len(df) == 3 and df["status"].iloc[2] == "error"
    # error rows are not "done": a re-run measures them again
    assert run_suite(items[:1], out=out, options=CPU, env=other, runner=record).skipped == 0
    assert ran == ["lora", "lora"]


def test_out_of_memory_is_a_row_and_ctrl_c_keeps_finished_rows(folder, tmp_path):
    items = suite_items(folder / "suite.yaml")
    items = [items[0], items[1], replace(items[0], scenario=items[0].scenario.with_(seq=32))]
    seen = []

    def runner(job):
        k = len(seen)
        seen.append(job.scenario.recipe.method)

        def fault(phase):
            if k == 0 and phase == "backward":
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            if k == 2 and phase == "load":
                raise KeyboardInterrupt

        return run(job, isolate=False, on_phase=fault)

    out = tmp_path / "faults.parquet"
    result = run_suite(items, out=out, options=CPU, env=profile_env("cpu"), runner=runner)
    assert seen == ["lora", "qlora", "lora"]
    assert result.interrupted and len(result.measured) == 2
    df = read_records([out])
    assert list(df["status"]) == ["oom", "ok"]  # the interrupted third scenario left no row
    oom = df.iloc[0]
    assert oom["meas_peak_phase"] == "backward"
    assert oom["error"].startswith("out of memory in backward (CUDA out of memory. Tried to allocate 2.00 GiB")
    assert math.isnan(oom["step_time_s"]) and pd_isna(oom["meas_peak_tensor_bytes"])
    assert df.iloc[1]["meas_peak_tensor_bytes"] > 0
    # an interrupted re-run picks up where it stopped: the OOM and OK rows are done, the third is measured
    again = run_suite(items, out=out, options=CPU, env=profile_env("cpu"),
                      runner=lambda job: ProfileResult("error", error="test runner"))
    assert again.skipped == 2 and len(again.measured) == 1


def pd_isna(value):
    import pandas as pd

    return bool(pd.isna(value))


def test_checkpoint_weights_are_loaded_and_a_mismatch_is_refused(tmp_path):
    import bitsandbytes as bnb
    import transformers
    from safetensors.torch import load_file

    from profilers.recipe import build_skeleton, materialize
    from vramplan.spec import Recipe

    config = transformers.AutoConfig.for_model(**TINY)
    torch.manual_seed(1)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(tmp_path / "ckpt")
    saved = load_file(str(tmp_path / "ckpt" / "model.safetensors"))
    files = sorted((tmp_path / "ckpt").glob("*.safetensors"))
    for method in ("lora", "qlora"):
        recipe = Recipe.default(method)
        skeleton, cfg = build_skeleton(TINY, recipe)
        files_of = check_checkpoint(files, skeleton, recipe, "ckpt")
        built = materialize(skeleton, cfg, recipe, fake=False)
        assert load_checkpoint(built, files_of, "cpu") == len(saved)
        base = built.model.get_base_model()
        assert torch.equal(base.model.embed_tokens.weight, saved["model.embed_tokens.weight"])
        q = base.model.layers[1].self_attn.q_proj.base_layer
        if method == "lora":
            assert torch.equal(q.weight, saved["model.layers.1.self_attn.q_proj.weight"])
        else:  # quantized anew from the checkpoint's tensor, with the recipe's settings
            ref = bnb.nn.Params4bit(saved["model.layers.1.self_attn.q_proj.weight"], requires_grad=False,
                                    blocksize=64, compress_statistics=True, quant_type="nf4",
                                    quant_storage=torch.uint8)._quantize("cpu")
            assert torch.equal(q.weight.data, ref.data)
            assert any(s is q.weight.quant_state for s in built.quant_states)
    # a config.json that does not describe the checkpoint
    wrong = dict(TINY, intermediate_size=96)
    skeleton, _ = build_skeleton(wrong, Recipe.default("lora"))
    with pytest.raises(CheckpointError, match=r"does not match its config.json: model.layers.0.mlp.gate_proj.weight "
                                              r"is \[128, 64\] in the checkpoint but \[96, 64\]"):
        check_checkpoint(files, skeleton, Recipe.default("lora"), "ckpt")
    fewer = dict(TINY, num_hidden_layers=1)
    skeleton, _ = build_skeleton(fewer, Recipe.default("qlora"))
    with pytest.raises(CheckpointError, match=r"tensor\(s\) the model does not have, e.g. model.layers.1."):
        check_checkpoint(files, skeleton, Recipe.default("qlora"), "ckpt")


def test_cli_checkpoint_mismatch_is_one_line(tmp_path, capsys):
    import transformers

    model = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**TINY),
                                                          dtype=torch.bfloat16)
    model.save_pretrained(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["num_hidden_layers"] = 3
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    code = main(["profile", str(tmp_path / "m"), "--device", "cpu", "--method", "lora", "--seq", "16"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1] == (f"vramplan: error: {tmp_path / 'm'}: the checkpoint does not match its config.json: 9 "
                       f"weight(s) of the model it describes are missing, e.g. model.layers.2.self_attn.q_proj.weight")


# ---- the NVML sampler against a fake NVML -------------------------------------------------------------------


class FakeNvml:
    """The pynvml functions the sampler uses. "used" is 1 GiB, and 5 GiB during a short window after start."""

    class NVMLError(Exception):
        pass

    def __init__(self, spike_at=0.10, spike_for=0.03, fail_init=False):
        self.spike_at, self.spike_for, self.fail_init = spike_at, spike_for, fail_init
        self.t0 = None
        self.calls = 0

    def nvmlInit(self):
        if self.fail_init:
            raise self.NVMLError("Driver Not Loaded")

    def nvmlDeviceGetCount(self):
        return 1

    def nvmlDeviceGetHandleByIndex(self, i):
        return ("handle", i)

    def nvmlDeviceGetHandleByUUID(self, uuid):
        raise self.NVMLError("Not Found")

    def nvmlDeviceGetName(self, handle):
        return b"Fake GPU 80GB"

    def nvmlSystemGetDriverVersion(self):
        return "999.99"

    def nvmlDeviceGetMemoryInfo(self, handle):
        self.calls += 1
        now = time.perf_counter()
        if self.t0 is None:
            self.t0 = now
        t = now - self.t0
        used = 5 * GiB if self.spike_at <= t < self.spike_at + self.spike_for else GiB
        return SimpleNamespace(total=80 * GiB, used=used, free=80 * GiB - used)


def test_sampler_catches_a_30ms_peak_at_500hz():
    attempts = []
    for _ in range(3):  # a loaded CI machine can deschedule the thread; the peak must be caught in 3 tries
        nv = FakeNvml()
        dev = NvmlDevice.open(0, nvml=nv)
        assert (dev.name, dev.driver, dev.total_bytes) == ("Fake GPU 80GB", "999.99", 80 * GiB)
        nv.t0 = None  # the window starts at the sampler's first sample
        with Sampler(dev, hz=500) as s:
            time.sleep(0.3)
        attempts.append((s.peak_used_bytes, s.rate_hz, s.samples))
        if s.peak_used_bytes == 5 * GiB and s.rate_hz >= 100:
            break
    peak, rate, samples = attempts[-1]
    assert peak == 5 * GiB, attempts
    assert rate >= 100 and samples >= 30, attempts
    assert s.first_used_bytes == GiB and s.error == ""


def test_sampler_refuses_slow_rates_and_nvml_errors_are_one_line():
    dev = NvmlDevice.open(0, nvml=FakeNvml())
    with pytest.raises(VramplanError, match=r"--sample-hz 50: sample at least 100 times a second"):
        Sampler(dev, hz=50)
    with pytest.raises(NvmlUnavailableError, match=r"NVML cannot be initialised \(Driver Not Loaded\).*--no-nvml"):
        NvmlDevice.open(0, nvml=FakeNvml(fail_init=True))
    with pytest.raises(NvmlUnavailableError, match=r"--gpu-index 3: NVML sees 1 GPU\(s\); use 0 to 0"):
        NvmlDevice.open(3, nvml=FakeNvml())
    with pytest.raises(NvmlUnavailableError, match=r"NVML cannot open the GPU with UUID GPU-abc \(Not Found\)"):
        NvmlDevice.open(0, uuid="GPU-abc", nvml=FakeNvml())


# ---- no GPU: clear answers ------------------------------------------------------------------------------------


@pytest.mark.skipif(not NO_GPU, reason="checks the answer on a machine without a CUDA GPU")
def test_no_gpu_says_how_to_trace_instead(folder, capsys):
    cfg = str(folder / "tiny" / "config.json")
    assert main(["profile", cfg, "--seq", "16"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vramplan: error: no CUDA GPU is visible to ")
    assert err.endswith(f": `vramplan trace {cfg} --compare` measures the step's tensors on the CPU without a GPU, "
                        f"or add --device cpu to run this profiler on the CPU (small models)")


@pytest.mark.skipif(not NO_GPU, reason="checks the answer on a machine without a CUDA GPU")
def test_isolated_job_reports_the_machine_problem_from_the_child(folder):
    items = suite_items(folder / "suite.yaml")
    res = run_isolated(ProfileJob(items[0].scenario, items[0].config, device="cuda"))
    assert res.status == "error" and res.fatal
    assert res.error.startswith("no CUDA GPU is visible to ")
    # run() turns the child's machine problem into the error itself: the suite stops instead of writing rows
    import profilers.profile as profile

    original = profile.run_isolated
    profile.run_isolated = lambda job: res
    try:
        with pytest.raises(VramplanError, match="^no CUDA GPU is visible"):
            run(ProfileJob(items[0].scenario, items[0].config, device="cuda"))
    finally:
        profile.run_isolated = original


@pytest.mark.skipif(not NO_GPU, reason="checks the answer where bitsandbytes has no CUDA library")
def test_bitsandbytes_without_cuda_is_one_line():
    import bitsandbytes

    from profilers.profile import check_bitsandbytes_cuda
    from vramplan.errors import MissingDependencyError

    with pytest.raises(MissingDependencyError) as err:
        check_bitsandbytes_cuda()
    assert str(err.value) == (
        f"bitsandbytes {bitsandbytes.__version__} has no CUDA library loaded here (backend CPU): install a CUDA "
        f"build (pip install 'bitsandbytes==0.50.2'), or profile without it: --method lora --optimizer adamw")


def test_nvml_index_follows_cuda_visible_devices(monkeypatch):
    from profilers.profile import NoGpuError, nvml_target

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert nvml_target(1) == (1, None)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    assert nvml_target(0) == (3, None) and nvml_target(1) == (1, None)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-5a2e,GPU-77f0")
    assert nvml_target(1) == (0, "GPU-77f0")
    with pytest.raises(NoGpuError, match=r"--gpu-index 2: CUDA_VISIBLE_DEVICES=GPU-5a2e,GPU-77f0 shows 2 GPU\(s\)"):
        nvml_target(2)


def test_torch_and_nvml_must_name_the_same_card(monkeypatch):
    from profilers.profile import NoGpuError, _check_same_gpu

    class Nvml:
        def nvmlDeviceGetUUID(self, handle):
            return b"GPU-5a2e3e8e-3d3c-4f1b-9c2a-0123456789ab"

    dev = SimpleNamespace(nvml=Nvml(), handle=None)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda i: SimpleNamespace(uuid="5a2e3e8e-3d3c-4f1b-9c2a-0123456789ab"))
    _check_same_gpu(dev, 0)  # torch writes the UUID without the prefix: the same card
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda i: SimpleNamespace(uuid="77f00000-3d3c-4f1b-9c2a-0123456789ab"))
    with pytest.raises(NoGpuError, match=r"^torch's cuda:1 is not NVML's GPU GPU-5a2e3e8e-3d3c-4f1b-9c2a-0123456789ab: "
                                         r"set CUDA_DEVICE_ORDER=PCI_BUS_ID"):
        _check_same_gpu(dev, 1)


def test_cli_bad_input_is_one_line(folder, capsys):
    suite = folder / "suite.yaml"
    cases = [
        (["profile"], "vramplan: error: give a MODEL or --suite FILE (one of them), e.g. vramplan profile 8b "
                      "--seq 2048 (see vramplan --help)"),
        (["profile", "8b", "--device", "cpu"], "vramplan: error: --device cpu allocates the model in CPU memory; "
                                               "llama-3.1-8b has 8.0B parameters: add --layers 2, or profile on a GPU"),
        (["profile", "8b", "--gpus", "2", "--shard", "ddp"],
         "vramplan: error: profile runs one process per GPU unless sharded: use --gpus N --shard fsdp, or leave out "
         "--gpus and --shard"),
        (["profile", "--suite", str(suite), "--device", "cpu", "--steps", "0"],
         "vramplan: error: --steps 0: use 1 to 10000 measured steps, e.g. --steps 10"),
    ]
    import torch

    if not torch.cuda.is_available():
        cases.append((["profile", "8b", "--gpus", "2", "--shard", "fsdp"],
                      "vramplan: error: --gpus 2 --shard fsdp needs 2 CUDA GPUs and this machine has 0: run the same "
                      "FSDP step on CPU processes with --device cpu --layers 2"))
    for argv, line in cases:
        assert main(argv) == 2, argv
        assert capsys.readouterr().err.strip().splitlines()[-1] == line
    gpu_suite = folder / "gpu-suite.yaml"
    gpu_suite.write_text(SUITE + "gpu: h100\n")
    assert main(["profile", "--suite", str(gpu_suite), "--device", "cpu"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"vramplan: error: {gpu_suite}: line 6: a profile suite measures this machine's GPU; remove gpu: (the card "
        f"is recorded with every row)")


def test_cli_prints_predicted_against_measured_and_appends(folder, tmp_path, capsys):
    cfg = str(folder / "tiny" / "config.json")
    out = tmp_path / "one.csv"
    assert main(["profile", cfg, "--device", "cpu", "--method", "lora", "--seq", "16", "--batch", "2",
                 "--warmup", "1", "--steps", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr()
    row = read_records([out]).iloc[0]
    lines = printed.out.splitlines()
    assert ["MiB", "predicted", "measured", "diff", "diff", "%"] in [line.split() for line in lines]
    peak = next(line.split() for line in lines if line.startswith("tensor peak"))
    b = plan_scenario(suite_items(folder / "suite.yaml")[0].scenario)
    assert peak[2:4] == [f"{b.peak_tensor_bytes / 2**20:.2f}", f"{row['meas_peak_tensor_bytes'] / 2**20:.2f}"]
    assert lines[-1].startswith("peak phase: predicted backward, measured backward; median of 1 steps")
    assert printed.err.splitlines()[-1] == f"appended 1 row(s) to {out}"
    # a suite with --json: one entry per scenario, measured values as the rows hold them
    out2 = tmp_path / "suite.parquet"
    assert main(["profile", "--suite", str(folder / "suite.yaml"), "--device", "cpu", "--warmup", "1", "--steps",
                 "1", "--out", str(out2), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    df = read_records([out2])
    assert [r["method"] for r in doc["results"]] == ["lora", "qlora"] == list(df["method"])
    for r, (_, row) in zip(doc["results"], df.iterrows()):
        assert r["status"] == "ok" and r["measured"]["meas_peak_tensor_bytes"] == row["meas_peak_tensor_bytes"]
        assert r["measured"]["tokens_per_s"] == pytest.approx(row["tokens_per_s"], rel=1e-12)
        assert r["predicted"]["peak_tensor_bytes"] == row["pred_peak_tensor_bytes"]
    assert doc["device"]["source"] == "profile"


def test_calibration_suite_fits_its_stated_time(capsys):
    """scenarios/calibration.yaml: every scenario fits an H100 and the run stays near its 20-minute budget."""
    from vramplan.gpus import resolve_gpu

    items = suite_items("scenarios/calibration.yaml")
    h100 = resolve_gpu("h100")
    secs = estimate_seconds(items, h100, warmup=2, steps=5)
    assert 15 * 60 <= sum(secs) <= 25 * 60
    plans = [plan_scenario(replace(it.scenario, gpu=h100)) for it in items]
    assert all(b.fits for b in plans)
    methods = {it.scenario.recipe.method for it in items}
    optimizers = {it.scenario.recipe.optimizer for it in items}
    assert methods == {"lora", "qlora"}
    assert {"adamw", "paged_adamw_8bit", "paged_adamw_32bit"} <= optimizers
    assert {it.scenario.recipe.grad_ckpt for it in items} == {True, False}
    seqs = {it.scenario.workload.seq for it in items}
    assert min(seqs) == 512 and max(seqs) == 8192
    assert {it.scenario.workload.batch for it in items} >= {1, 8}
    params = sorted({it.scenario.model.params for it in items})
    assert params[0] < 1e9 and params[-1] > 7e9
    assert main(["profile", "--suite", "scenarios/calibration.yaml", "--dry-run"]) == 0
    assert f"{len(items)} scenarios, about {sum(secs) / 60:.1f} min on NVIDIA H100 80GB HBM3" in capsys.readouterr().out


# ---- on a GPU ----------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(NO_GPU, reason="needs a CUDA GPU (torch.cuda.is_available() is False here)")
@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_gpu_profile_fills_every_view(folder, method):
    items = [it for it in suite_items(folder / "suite.yaml") if it.scenario.recipe.method == method]
    res = run(ProfileJob(items[0].scenario, items[0].config, device="cuda", warmup=1, steps=3))
    assert res.status == "ok", res.error
    m = res.measured
    assert 0 < m["meas_peak_tensor_bytes"] <= m["meas_peak_allocated_bytes"] <= m["meas_peak_reserved_bytes"]
    assert m["meas_peak_reserved_bytes"] + m["meas_context_bytes"] <= m["meas_peak_bytes"]
    assert 0 < m["meas_loaded_bytes"] <= m["meas_peak_allocated_bytes"]
    assert m["meas_context_bytes"] > 64 * 2**20  # a CUDA context is hundreds of MiB
    assert res.info["nvml_rate_hz"] >= 100
