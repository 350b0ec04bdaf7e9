"""The tracer: fake tensors give exactly the bytes of the same step on real tensors; the CLI; clear errors."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("bitsandbytes")

from profilers.trace import trace_scenario  # noqa: E402
from vramplan.cli import main  # noqa: E402
from vramplan.models import shape_from_config  # noqa: E402
from vramplan.plan import plan_scenario  # noqa: E402
from vramplan.spec import Recipe, Scenario, Workload  # noqa: E402

pytestmark = pytest.mark.slow

# Real widths are not needed to compare fake with real; dimensions make 4-bit blocks end partially and LoRA
# tensors fall on both sides of bitsandbytes' 4096-element threshold.
TINY = dict(model_type="llama", architectures=["LlamaForCausalLM"], hidden_size=136, intermediate_size=256,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=1000,
            max_position_embeddings=256, tie_word_embeddings=False, dtype="bfloat16")
SHAPE = shape_from_config(TINY, name="tiny-llama")

CASES = {
    "lora-gc-dropout": replace(Recipe.default("lora")),
    "lora-nogc-nodropout": replace(Recipe.default("lora"), grad_ckpt=False, dropout=0.0),
    "qlora-prep-gc-dropout": replace(Recipe.default("qlora")),
    "qlora-prep-nogc-nodropout": replace(Recipe.default("qlora"), grad_ckpt=False, dropout=0.0),
    "qlora-noprep-gc-nodropout": replace(Recipe.default("qlora"), kbit_prep=False, dropout=0.0),
    "qlora-noprep-nogc-dropout-8bit": replace(Recipe.default("qlora"), kbit_prep=False, grad_ckpt=False,
                                             optimizer="adamw_8bit"),
    "qlora-fp4-nodq-qv": replace(Recipe.default("qlora"), quant="fp4", double_quant=False,
                                 targets=("q_proj", "v_proj")),
    "full-adamw": Recipe.default("full"),
}


def _phase_bytes(result):
    return {p.phase: (p.peak_bytes, dict(p.components)) for p in result.phases}


@pytest.mark.parametrize("case", list(CASES))
def test_fake_equals_real(case):
    """The same step on fake and on real CPU tensors: identical bytes in every phase and component."""
    s = Scenario(SHAPE, CASES[case], Workload(32, 2))
    fake = trace_scenario(s, TINY, fake=True)
    real = trace_scenario(s, TINY, fake=False)
    assert _phase_bytes(fake) == _phase_bytes(real)
    assert [p.phase for p in fake.phases] == ["load", "forward", "loss", "backward", "optimizer"]
    assert fake.peak_bytes == real.peak_bytes > 0
    assert real.loss is not None and real.loss == pytest.approx(6.9, abs=0.5)  # ln(1000) = 6.91: random weights
    assert fake.trainable_params == real.trainable_params == plan_scenario(s).trainable_params


def test_static_components_equal_the_planner_to_512_byte_rounding():
    """What the tracker registers before the step is the planner's static memory, rounded per storage."""
    s = Scenario(SHAPE, Recipe.default("qlora"), Workload(32, 2))
    t = trace_scenario(s, TINY, fake=True)
    b = plan_scenario(s)
    load = {p.phase: p for p in t.phases}["load"].components
    n_tensors = 2 * (7 + 2) + 3  # per layer: 7 linears + 2 norms; embeddings, final norm, lm_head
    for c in ("weights", "adapters"):
        assert 0 <= load[c] - b.components[c] < 512 * (n_tensors + 2 * 7 * 2), c
    assert load["gradients"] == 0 and load["activations"] == 0


def test_gradients_are_tagged_and_freed():
    s = Scenario(SHAPE, Recipe.default("lora"), Workload(32, 2))
    t = trace_scenario(s, TINY, fake=True)
    phases = {p.phase: p for p in t.phases}
    assert phases["forward"].components["gradients"] == 0
    # after backward every adapter has a gradient: the optimizer phase sees all of them (512-B rounded)
    assert phases["optimizer"].components["gradients"] >= plan_scenario(s).detail["lora_param_bytes"]
    labels = {p.phase for p in t.subphases}
    assert {"backward/log_softmax backward", "backward/last decoder layer", "backward/first decoder layer"} <= labels


def test_patches_are_restored():
    import torch
    import transformers.masking_utils as mu

    before = (mu.find_packed_sequence_indices, torch.is_autocast_enabled)
    trace_scenario(Scenario(SHAPE, Recipe.default("lora"), Workload(16, 1)), TINY)
    assert (mu.find_packed_sequence_indices, torch.is_autocast_enabled) == before


def test_native_dropout_swap_keeps_the_scaling():
    import torch

    from profilers.patches import use_native_dropout

    model = torch.nn.Sequential(torch.nn.Dropout(0.25), torch.nn.Dropout(0.0))
    assert use_native_dropout(model) == 1
    x = torch.ones(10_000)
    y = model(x)
    kept = y[y != 0]
    assert torch.allclose(kept, torch.full_like(kept, 1 / 0.75))
    assert 0.2 < (y == 0).float().mean().item() < 0.3
    model.eval()
    assert torch.equal(model(x), x)


def test_cli_trace_json_and_compare(capsys):
    assert main(["trace", "qwen2.5-0.5b", "--layers", "1", "--seq", "64", "--method", "qlora", "--json",
                 "--compare"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["source"] == "trace"
    (p,) = doc["plans"]
    assert p["method"] == "qlora" and p["components"]["overhead"] == 0
    assert sum(p["components"].values()) == p["peak_tensor_bytes"]
    assert [t["phase"] for t in p["timeline"]] == ["load", "forward", "loss", "backward", "optimizer"]
    (c,) = doc["compare"]
    assert abs(c["peak"]["diff_pct"]) < 2
    assert c["peak"]["traced_bytes"] == p["peak_tensor_bytes"]


def test_cli_trace_table_and_record(tmp_path, capsys):
    out = tmp_path / "trace.csv"
    assert main(["trace", "qwen2.5-0.5b", "--layers", "1", "--seq", "64", "--compare", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "tensor peak" in text and "predicted" in text and "traced" in text
    from vramplan.records import read_records

    df = read_records([out])
    assert list(df["method"]) == ["lora", "qlora"] and set(df["source"]) == {"trace"}
    assert (df["meas_peak_tensor_bytes"] > 0).all() and df["meas_peak_bytes"].isna().all()


@pytest.mark.parametrize("argv, fragment", [
    (["trace", "8b", "--gpus", "2", "--shard", "fsdp"], "one process"),
    (["trace", "8b", "--real"], "--real allocates"),
    (["trace", "8b", "--layers", "99"], "more than the model's 32 layers"),
    (["trace", "no-such-model"], "unknown model"),
    # kbit prep upcasts Mixtral's unquantized fused experts to fp32; the grouped matmul kernel wants bf16
    (["trace", "mixtral-8x7b", "--layers", "1", "--seq", "16", "--method", "qlora"], "failed in the libraries"),
])
def test_cli_trace_bad_input_is_one_line(argv, fragment, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err and len(err.strip().splitlines()) == 1


def test_architecture_transformers_cannot_build(tmp_path, capsys):
    cfg = dict(TINY, model_type="llama", architectures=["LlamaForCausalLM"])
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    assert main(["trace", str(path), "--attn", "flash", "--seq", "16", "--method", "lora"]) == 2
    err = capsys.readouterr().err
    assert "cannot build" in err and "--attn" in err and len(err.strip().splitlines()) == 1


def test_missing_library_names_the_extra(monkeypatch):
    import sys

    from profilers.recipe import require
    from vramplan.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "peft", None)  # what an absent package looks like to import
    with pytest.raises(MissingDependencyError, match=r"peft is not installed.*pip install 'vramplan\[profile\]'"):
        require("peft")
