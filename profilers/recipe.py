"""Build the model a scenario describes, exactly as a user's training script would — shared by trace and profile.

The order is the order of a typical QLoRA / LoRA script, using the libraries' own code at every step:

1. the architecture from ``config.json`` (``AutoModelForCausalLM.from_config``) on the meta device, with the
   recipe's dtype and attention implementation;
2. for QLoRA, transformers' own bitsandbytes quantizer (``AutoHfQuantizer`` from a ``BitsAndBytesConfig`` with
   the recipe's quant type, double quant, compute dtype and storage) replaces the linear layers, choosing the
   modules it keeps unquantized (lm_head, tied weights) as ``from_pretrained(quantization_config=...)`` does;
3. ``peft.prepare_model_for_kbit_training`` when the recipe says so (fp32 upcast, input grads, checkpointing);
4. ``peft.get_peft_model`` with the recipe's targets, rank, alpha, dropout and adapter dtype;
5. gradient checkpointing as ``Trainer(gradient_checkpointing=True)`` enables it;
6. the tensors are made: fake tensors (no memory, for the tracer), or real ones on a device (the profiler and
   the tracer's real mode). 4-bit weights are quantized by bitsandbytes' ``quantize_4bit`` with the recipe's
   blocksize.

Building on meta first and making the tensors last is what lets fake tensors work: module moves (``.to``) of
fake parameters fail in torch, and peft moves adapters to the base layer's device.

Known limitations: the weights are random (memory and speed do not depend on the values); blocksize, which
``BitsAndBytesConfig`` cannot set, is applied when the 4-bit weights are made (as a pre-quantized checkpoint
with that blocksize would load).
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass

from vramplan.errors import MissingDependencyError, ScenarioError

DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
ATTN = {"sdpa": "sdpa", "eager": "eager", "flash": "flash_attention_2"}
PROFILE_EXTRA = "pip install 'vramplan[profile]'"


def require(*names: str):
    """Import the heavy libraries, or raise one line naming the extra to install."""
    import importlib
    import logging

    # bitsandbytes' CPU backend logs a warning when an optional CPU kernel package is absent: irrelevant here
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    mods = []
    for name in names:
        try:
            mods.append(importlib.import_module(name))
        except ImportError as exc:
            raise MissingDependencyError(
                f"{name} is not installed (needed to build the real model): {PROFILE_EXTRA}"
                + (f" ({exc})" if name not in str(exc) else "")
            ) from None
    return mods[0] if len(mods) == 1 else mods


def torch_dtype(name: str):
    torch = require("torch")
    return getattr(torch, DTYPES[name])


def bnb_config(recipe):
    """The ``BitsAndBytesConfig`` of a QLoRA recipe (blocksize is applied when quantizing, see module doc)."""
    transformers = require("transformers")
    return transformers.BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=recipe.quant,
        bnb_4bit_use_double_quant=recipe.double_quant,
        bnb_4bit_compute_dtype=torch_dtype(recipe.dtype),
        bnb_4bit_quant_storage=require("torch").uint8,
    )


def lora_config(recipe):
    peft = require("peft")
    targets = "all-linear" if "all-linear" in recipe.targets else list(recipe.targets)
    return peft.LoraConfig(r=recipe.rank, lora_alpha=recipe.alpha, lora_dropout=recipe.dropout,
                           target_modules=targets, task_type="CAUSAL_LM")


@dataclass
class Built:
    """A model built for a recipe, and what the tracker needs to tell its tensors apart."""

    model: object
    recipe: object
    config: object
    adapters: list  # trainable parameters (LoRA, or every parameter for full fine-tuning)
    quant_states: list  # bitsandbytes QuantState of every 4-bit layer


def _quiet():
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    return stack


def build_skeleton(config_dict: dict, recipe):
    """Steps 1-5 on the meta device. Returns (model, hf_config). No memory is used."""
    torch, transformers, peft = require("torch", "transformers", "peft")
    recipe.validate()
    if recipe.quantized:
        require("bitsandbytes")
    try:
        config = transformers.AutoConfig.for_model(**config_dict)
    except (ValueError, KeyError, TypeError) as exc:
        raise ScenarioError(f"transformers cannot read this config.json ({exc}); pass a decoder model's config") from None
    config._attn_implementation = ATTN[recipe.attn]
    with _quiet(), torch.device("meta"):
        try:
            model = transformers.AutoModelForCausalLM.from_config(
                config, dtype=torch_dtype(recipe.dtype), attn_implementation=ATTN[recipe.attn])
        except (ValueError, ImportError) as exc:
            raise ScenarioError(
                f"transformers {transformers.__version__} cannot build {config.model_type} with attention "
                f"{recipe.attn!r} ({' '.join(str(exc).split())[:160]}); try --attn eager") from None
    if recipe.quantized:
        from transformers.quantizers import AutoHfQuantizer

        quantizer = AutoHfQuantizer.from_config(bnb_config(recipe), pre_quantized=False)
        with _quiet():
            quantizer.preprocess_model(model, device_map={"": "cpu"}, dtype=torch_dtype(recipe.dtype))
        model.hf_quantizer = quantizer
        _postprocess(quantizer, model)
    if recipe.method == "full":
        model.requires_grad_(True)
    if recipe.quantized and recipe.kbit_prep:
        with _quiet():
            model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=recipe.grad_ckpt)
    if recipe.trains_adapters:
        with _quiet():
            try:
                model = peft.get_peft_model(model, lora_config(recipe),
                                            autocast_adapter_dtype=recipe.adapter_dtype == "fp32")
            except ValueError as exc:
                raise ScenarioError(f"peft cannot apply this LoRA recipe: {' '.join(str(exc).split())}") from None
        if recipe.adapter_dtype != "fp32":
            for p in model.parameters():
                if p.requires_grad:
                    p.data = p.data.to(torch_dtype(recipe.adapter_dtype))
    if recipe.grad_ckpt and not (recipe.quantized and recipe.kbit_prep):
        # what Trainer(gradient_checkpointing=True) does for a peft model
        model.gradient_checkpointing_enable()
        if recipe.trains_adapters:
            model.enable_input_require_grads()
    model.train()
    return model, config


def _postprocess(quantizer, model):
    """transformers' post-load step (is_loaded_in_4bit, quantization_config), without loading weights."""
    with _quiet():
        quantizer.postprocess_model(model)


def linear4bit_modules(model):
    import bitsandbytes as bnb

    return [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]


def materialize(model, config, recipe, *, fake: bool, device: str = "cpu", seed: int = 0) -> Built:
    """Step 6: give every meta parameter and buffer a real or fake tensor on ``device``.

    Must be called inside the ``FakeTensorMode`` when ``fake`` is true. Real tensors are random (normal, std
    0.02; norms 1; LoRA B zero as peft initialises it); buffers that hold computed values (rotary frequencies,
    embedding scales) are taken from a reference module built for real on ``device``.
    """
    torch = require("torch")
    if not fake:
        torch.manual_seed(seed)
    reference = None if fake else _reference_buffers(config, recipe, device)
    made: dict[int, object] = {}  # id(meta tensor) -> new tensor, so tied weights stay tied
    quant_states = []
    four_bit = set(linear4bit_modules(model)) if recipe.quantized else set()
    for mod_name, module in model.named_modules():
        if module in four_bit:
            quant_states.append(_make_4bit(module, recipe, fake=fake, device=device, made=made))
        for name, p in list(module._parameters.items()):
            if p is None or (module in four_bit and name == "weight"):
                continue
            if id(p) not in made:
                data = _new_tensor(p, fake=fake, device=device, init=_init_kind(mod_name, name))
                made[id(p)] = torch.nn.Parameter(data, requires_grad=p.requires_grad)
            module._parameters[name] = made[id(p)]
        for name, b in list(module._buffers.items()):
            if b is None:
                continue
            if id(b) not in made:
                key = f"{mod_name}.{name}" if mod_name else name
                if reference is not None and key in reference:
                    made[id(b)] = reference[key].to(device)
                else:
                    made[id(b)] = _new_tensor(b, fake=fake, device=device, init="zeros")
            module._buffers[name] = made[id(b)]
    adapters = [p for p in model.parameters() if p.requires_grad]
    return Built(model, recipe, config, adapters, quant_states)


def _init_kind(module_name: str, param_name: str) -> str:
    if ".lora_B." in f".{module_name}." or module_name.endswith("lora_B") or ".lora_B" in module_name:
        return "zeros"
    if "norm" in module_name.lower() or "layernorm" in module_name.lower():
        return "norm"
    return "normal" if param_name == "weight" else "zeros"


def _new_tensor(meta, *, fake: bool, device: str, init: str):
    torch = require("torch")
    if fake:
        return torch.empty(meta.shape, dtype=meta.dtype, device=device)
    if init == "zeros":
        return torch.zeros(meta.shape, dtype=meta.dtype, device=device)
    if init == "norm":
        return torch.ones(meta.shape, dtype=meta.dtype, device=device)
    t = torch.empty(meta.shape, dtype=torch.float32, device=device).normal_(0.0, 0.02)
    return t.to(meta.dtype)


def _reference_buffers(config, recipe, device: str) -> dict:
    """Computed buffers (rotary inv_freq, embedding scales) from one real decoder built on ``device``.

    Only the buffers are kept; the reference has a single layer, so this costs little even for large models.
    """
    torch, transformers = require("torch", "transformers")
    import copy

    small = copy.deepcopy(config)
    layers = small.num_hidden_layers
    small.num_hidden_layers = 1
    if isinstance(getattr(small, "layer_types", None), list):
        small.layer_types = small.layer_types[:1]
    with _quiet(), torch.device(device):
        ref = transformers.AutoModelForCausalLM.from_config(small, dtype=torch_dtype(recipe.dtype))
    out = {}
    for name, buf in ref.named_buffers():
        if ".layers.0." in name:  # per-layer buffers: the same for every layer
            for i in range(layers):
                out[_peft_name(name.replace(".layers.0.", f".layers.{i}."), recipe)] = buf
        else:
            out[_peft_name(name, recipe)] = buf
    return out


def _peft_name(name: str, recipe) -> str:
    return f"base_model.model.{name}" if recipe.trains_adapters else name


def _make_4bit(module, recipe, *, fake: bool, device: str, made: dict):
    """Quantize the layer's weight with the recipe's settings; returns its QuantState."""
    torch, bnb = require("torch", "bitsandbytes")
    meta = module.weight
    shape = tuple(meta.shape)
    dtype = torch_dtype(recipe.dtype)
    if fake:
        dense = torch.empty(shape, dtype=dtype, device=device)
        packed, state = bnb.functional.quantize_4bit(
            dense, blocksize=recipe.blocksize, compress_statistics=recipe.double_quant,
            quant_type=recipe.quant, quant_storage=torch.uint8)
        weight = _fake_params4bit(packed, state, module, recipe)
    else:
        dense = torch.empty(shape, dtype=torch.float32, device=device).normal_(0.0, 0.02).to(dtype)
        weight = bnb.nn.Params4bit(
            dense, requires_grad=False, blocksize=recipe.blocksize, compress_statistics=recipe.double_quant,
            quant_type=recipe.quant, quant_storage=torch.uint8, module=module,
        )
        weight = weight.to(device) if device != "cpu" else weight._quantize("cpu")
        state = weight.quant_state
    module._parameters["weight"] = weight
    module.quant_state = state
    made[id(meta)] = weight
    return state


def _fake_params4bit(packed, state, module, recipe):
    """A fake packed 4-bit weight that bitsandbytes' Linear4bit and peft treat as a ``Params4bit``.

    ``Params4bit`` cannot wrap a FakeTensor (torch refuses to re-associate its Python object), so the fake packed
    tensor becomes a plain frozen ``nn.Parameter`` carrying the attributes ``Params4bit`` carries and that
    ``Linear4bit.forward``, ``matmul_4bit`` and peft read. Tested against the real ``Params4bit`` byte for byte.
    """
    torch = require("torch")
    w = torch.nn.Parameter(packed, requires_grad=False)
    w.quant_state = state
    w.blocksize = recipe.blocksize
    w.compress_statistics = recipe.double_quant
    w.quant_type = recipe.quant
    w.quant_storage = torch.uint8
    w.bnb_quantized = True
    w.module = module
    return w


def quant_state_tensors(state):
    """Every tensor a QuantState holds (absmax, code, offset, and the nested state2 with double quant)."""
    torch, bnb = require("torch", "bitsandbytes")
    for value in vars(state).values():
        if torch.is_tensor(value):
            yield value
        elif isinstance(value, bnb.functional.QuantState):
            yield from quant_state_tensors(value)


def make_optimizer(params, recipe, *, lr: float = 2e-4):
    """The recipe's optimizer, as Trainer builds it for each ``optim`` name (constructed outside fake mode)."""
    torch = require("torch")
    name = recipe.optimizer
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, fused=True)
    if name == "adamw_torch":
        return torch.optim.AdamW(params, lr=lr, foreach=True)
    bnb = require("bitsandbytes")
    cls = {
        "adamw_8bit": bnb.optim.AdamW8bit, "paged_adamw_8bit": bnb.optim.PagedAdamW8bit,
        "adamw_32bit": bnb.optim.AdamW32bit, "paged_adamw_32bit": bnb.optim.PagedAdamW32bit,
    }.get(name)
    if cls is None:
        raise ScenarioError(f"unknown optimizer {name!r}; see vramplan plan --help for the names")
    return cls(params, lr=lr)
