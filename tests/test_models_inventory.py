"""The planner's parameter inventory, derived from config.json without torch, against the real classes.

For every catalogue model: build the transformers 5.23 class on the meta device (no memory, no weights),
apply the 4-bit module replacement transformers uses when loading with bitsandbytes, and wrap it with peft
LoRA ``target_modules="all-linear"``. The planner must name the same tensors with the same shapes, the same
quantized modules, and the same number of trainable LoRA parameters.
"""

import json
import re
from collections import Counter
from importlib import resources

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
pytest.importorskip("bitsandbytes")

from vramplan import memory as m  # noqa: E402
from vramplan.models import catalog_names, load_model  # noqa: E402
from vramplan.spec import Recipe  # noqa: E402

pytestmark = pytest.mark.slow


def _config(stem):
    text = resources.files("vramplan").joinpath("catalog", "models", f"{stem}.json").read_text()
    cfg = json.loads(text)
    cfg.pop("_vramplan", None)
    model_type = cfg.pop("model_type")
    return transformers.AutoConfig.for_model(model_type, **cfg)


def _meta_model(stem):
    config = _config(stem)
    with torch.device("meta"):
        return transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)


def _group_key(name):
    return re.sub(r"\.\d+\.", ".*.", name)


@pytest.mark.parametrize("stem", catalog_names())
def test_inventory_matches_transformers(stem):
    shape = load_model(stem)
    model = _meta_model(stem)
    # parameters: total (tied once) and the multiset of (layer-generic name, shape)
    seen, total = set(), 0
    real = Counter()
    for name, p in model.named_parameters(remove_duplicate=True):
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        real[(_group_key(name), tuple(p.shape))] += 1
    assert shape.params == total
    planned_linear = Counter()
    for g in shape.groups:
        if g.kind in ("linear", "router", "experts", "embedding") or (g.kind == "lm_head" and not g.tied):
            planned_linear[(g.name + ("" if g.kind == "experts" else ".weight"), g.shape)] += g.count
            if g.bias:
                planned_linear[(g.name + ".bias", (g.bias,))] += g.count
    real_linear = Counter({k: v for k, v in real.items() if "norm" not in k[0]})
    assert real_linear == planned_linear
    # rotary buffers are fp32 and counted once
    bufs = {n: b for n, b in model.named_buffers() if "inv_freq" in n}
    assert sum(b.numel() * 4 for b in bufs.values()) == m.rotary_buffer_bytes(shape)


@pytest.mark.parametrize("stem", catalog_names())
def test_quantized_modules_and_lora_targets(stem):
    from transformers.integrations.bitsandbytes import replace_with_bnb_linear
    from transformers.quantizers.base import get_keys_to_not_convert

    shape = load_model(stem)
    model = _meta_model(stem)
    skip = get_keys_to_not_convert(model)
    qcfg = transformers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                          bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16)
    model = replace_with_bnb_linear(model, modules_to_not_convert=skip, quantization_config=qcfg)
    model.is_loaded_in_4bit = True
    import bitsandbytes as bnb

    real_q = Counter(_group_key(n) for n, mod in model.named_modules() if isinstance(mod, bnb.nn.Linear4bit))
    planned_q = Counter({g.name: g.count for g in shape.groups if g.quantized})
    assert real_q == planned_q
    # peft all-linear at rank 4: trainable parameters
    lora = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    trainable = sum(p.numel() for p in lora.parameters() if p.requires_grad)
    recipe = Recipe.default("qlora")
    assert m.trainable_params(shape, recipe, 4) == trainable


@pytest.mark.parametrize("model_type", ["llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma2", "phi3"])
@pytest.mark.parametrize("attention_bias, mlp_bias", [(True, True), (False, False)])
def test_bias_flags_follow_each_class(model_type, attention_bias, mlp_bias):
    """Some classes read attention_bias / mlp_bias from the config, others hard-code biases: same count."""
    from vramplan.models import shape_from_config

    cfg = {"model_type": model_type, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
           "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 128,
           "attention_bias": attention_bias, "mlp_bias": mlp_bias, "pad_token_id": 0, "bos_token_id": 1,
           "eos_token_id": 2}
    if model_type == "mixtral":
        cfg.update(num_local_experts=4, num_experts_per_tok=2)
    shape = shape_from_config(dict(cfg), name="tiny")
    mt = cfg.pop("model_type")
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(mt, **cfg))
    assert shape.params == sum(p.numel() for p in model.parameters())
