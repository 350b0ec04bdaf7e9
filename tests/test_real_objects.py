"""The planner's static components against the bytes of REAL objects built on CPU.

Every case builds a tiny random model with transformers, saves it with ``save_pretrained`` and loads it back the
way a user does: ``AutoModelForCausalLM.from_pretrained(path, quantization_config=BitsAndBytesConfig(...),
dtype=torch.bfloat16, device_map="cpu")`` for 4-bit recipes (bitsandbytes 0.50.2 quantizes on its CPU backend),
plain ``from_pretrained(..., dtype=torch.bfloat16)`` for LoRA / full fine-tuning. Then, as the recipe says,
``peft.prepare_model_for_kbit_training``, ``peft.get_peft_model``, one forward + backward (loss from
``labels=input_ids``) and one optimizer step. The ``ModelShape`` is derived with ``shape_from_config`` from the
same config dict that built the model, and every component function must equal the real byte count exactly.

What is compared (all counts are ``numel * element_size`` of distinct storages, so tied weights count once):

* ``base_weight_bytes``: every parameter and buffer of the model except the LoRA parameters, measured twice:
  after the training step (the state during training). A step changes nothing but the dtype of Linear4bit biases
  (the first ``Linear4bit.forward`` casts them in place to the compute dtype), which is checked separately.
  Packed ``Params4bit`` data counts here; ``QuantState`` tensors do not.
* ``quant_constant_bytes``: every tensor held by each ``Linear4bit``'s ``QuantState`` (absmax, code, offset and,
  with double quant, the nested ``state2`` absmax and code), counted per layer.
* ``lora_adapter_bytes``: the trainable LoRA parameters after ``get_peft_model``.
* ``gradient_bytes``: ``.grad`` of every trainable parameter after backward.
* ``optimizer_state_bytes``: allocated + paged (on CPU nothing is paged: bitsandbytes' ``get_state_buffer`` falls
  back to ``torch.zeros_like`` for CPU parameters) against the distinct tensors in ``optimizer.state`` after one
  step. torch AdamW ``fused=True`` keeps a 0-dim fp32 ``step`` tensor per parameter on the parameter's device
  (counted, as the planner does). torch AdamW ``foreach=True`` (not fused, not capturable) keeps ``step`` as a CPU
  scalar tensor even when the parameters are on the GPU (torch/optim/adam.py ``_init_group``), so it is excluded
  from the comparison, matching the planner's 0 GPU bytes for it. bitsandbytes keeps ``step`` as a Python int; its
  8-bit states share two 256-entry fp32 qmaps across all parameters (counted once, by storage).

Blocksize: ``BitsAndBytesConfig`` has no blocksize knob in transformers 5.23 (the quantizer builds ``Params4bit``
with bitsandbytes' default 64). For the blocksize-128 case the loaded model's weights are re-quantized with
bitsandbytes' public API (``functional.dequantize_4bit`` then ``nn.Params4bit(..., blocksize=128)`` moved to the
CPU, which quantizes), saved with ``save_pretrained`` as a pre-quantized 4-bit checkpoint, and loaded again with
``from_pretrained``: the path by which a blocksize-128 checkpoint reaches a user.

Mixtral: peft wraps the fused 3-D experts with ``lora.ParamWrapper``, which refuses ``lora_dropout != 0``, so the
Mixtral recipes use dropout 0.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
bnb = pytest.importorskip("bitsandbytes")

from vramplan import memory  # noqa: E402
from vramplan.models import read_config, shape_from_config  # noqa: E402
from vramplan.spec import Recipe  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

os.environ.setdefault("HF_HUB_OFFLINE", "1")

VOCAB = 1000

# Small but realistic configs. Dimensions are chosen so that 4-bit weights end in a partial quant block (the
# numel of a whole weight is blocked, not each row), that some double-quant absmax vectors exceed one 256-block,
# and that LoRA tensors fall on both sides of (and exactly on) bitsandbytes' 4096-element 8-bit threshold.
CONFIGS: dict[str, dict] = {
    # GQA (2 kv heads of 4), untied. k_proj numel 68*136 = 9248 = 144.5 blocks of 64; gate numel 34816 -> 544
    # blocks -> 3 nested blocks of 256. r=16: gate lora_B (256,16) has exactly 4096 elements.
    "llama": dict(
        model_type="llama", architectures=["LlamaForCausalLM"], hidden_size=136, intermediate_size=256,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=VOCAB,
        max_position_embeddings=256, tie_word_embeddings=False, dtype="bfloat16",
    ),
    # tied embeddings, q/k/v biases (no o_proj bias); gate numel 100*72 = 7200 = 112.5 blocks.
    "qwen2": dict(
        model_type="qwen2", architectures=["Qwen2ForCausalLM"], hidden_size=72, intermediate_size=100,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=VOCAB,
        max_position_embeddings=256, tie_word_embeddings=True, dtype="bfloat16",
    ),
    # fused qkv_proj and gate_up_proj
    "phi3": dict(
        model_type="phi3", architectures=["Phi3ForCausalLM"], hidden_size=96, intermediate_size=100,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=VOCAB,
        max_position_embeddings=256, tie_word_embeddings=False, dtype="bfloat16",
        pad_token_id=0, bos_token_id=1, eos_token_id=2,
    ),
    # q_norm / k_norm, explicit head_dim != hidden/heads
    "qwen3": dict(
        model_type="qwen3", architectures=["Qwen3ForCausalLM"], hidden_size=80, intermediate_size=100,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=24, vocab_size=VOCAB,
        max_position_embeddings=256, tie_word_embeddings=False, dtype="bfloat16",
    ),
    # 4 norms per layer, tied by default, head_dim explicit
    "gemma2": dict(
        model_type="gemma2", architectures=["Gemma2ForCausalLM"], hidden_size=64, intermediate_size=100,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=24, vocab_size=VOCAB,
        max_position_embeddings=256, dtype="bfloat16", pad_token_id=0, bos_token_id=2, eos_token_id=1,
    ),
    # fused 3-D experts (left in bf16 by 4-bit loading), router "gate". The CPU grouped_mm experts kernel needs
    # 16-byte strides, so intermediate_size is a multiple of 8. r=4: gate_up lora_B (208, 2*4*4) has 6656 elements.
    "mixtral": dict(
        model_type="mixtral", architectures=["MixtralForCausalLM"], hidden_size=64, intermediate_size=104,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, num_local_experts=4,
        num_experts_per_tok=2, vocab_size=VOCAB, max_position_embeddings=256, tie_word_embeddings=False,
        dtype="bfloat16",
    ),
}


def _recipe(method: str, **changes) -> Recipe:
    return dataclasses.replace(Recipe.default(method), **changes)


QV = ("q_proj", "v_proj")
# case id -> (architecture, recipe)
CASES: dict[str, tuple[str, Recipe]] = {
    "llama-qlora-nf4-dq-prep-r16": ("llama", _recipe("qlora", rank=16)),
    "llama-qlora-nf4-nodq-noprep-r4-qv": ("llama", _recipe("qlora", double_quant=False, kbit_prep=False, rank=4,
                                                           targets=QV)),
    "llama-qlora-fp4-dq-prep-r4": ("llama", _recipe("qlora", quant="fp4", rank=4)),
    "llama-qlora-fp4-nodq-noprep-r16": ("llama", _recipe("qlora", quant="fp4", double_quant=False, kbit_prep=False,
                                                         rank=16)),
    "llama-qlora-nf4-dq-bs128-prep-r16": ("llama", _recipe("qlora", blocksize=128, rank=16)),
    "llama-qlora-nf4-nodq-bs128-noprep-r4": ("llama", _recipe("qlora", blocksize=128, double_quant=False,
                                                              kbit_prep=False, rank=4)),
    "llama-qlora-bf16-adapters-r16": ("llama", _recipe("qlora", adapter_dtype="bf16", rank=16)),
    "llama-lora-r16": ("llama", _recipe("lora", rank=16)),
    "llama-lora-bf16-adapters-r4-qv": ("llama", _recipe("lora", rank=4, targets=QV, adapter_dtype="bf16")),
    "llama-full": ("llama", _recipe("full")),
    "qwen2-qlora-nf4-dq-prep-r16": ("qwen2", _recipe("qlora", rank=16)),
    "qwen2-qlora-nf4-nodq-noprep-r4-qv": ("qwen2", _recipe("qlora", double_quant=False, kbit_prep=False, rank=4,
                                                           targets=QV)),
    "qwen2-lora-r4": ("qwen2", _recipe("lora", rank=4)),
    "qwen2-full": ("qwen2", _recipe("full")),
    "phi3-qlora-nf4-dq-prep-r16": ("phi3", _recipe("qlora", rank=16)),
    "phi3-lora-r4": ("phi3", _recipe("lora", rank=4)),
    "qwen3-qlora-nf4-dq-prep-r4": ("qwen3", _recipe("qlora", rank=4)),
    "qwen3-qlora-nf4-nodq-noprep-r16-qv": ("qwen3", _recipe("qlora", double_quant=False, kbit_prep=False,
                                                            rank=16, targets=QV)),
    "gemma2-qlora-nf4-dq-prep-r16": ("gemma2", _recipe("qlora", rank=16)),
    "gemma2-lora-r4": ("gemma2", _recipe("lora", rank=4)),
    "mixtral-qlora-nf4-dq-prep-r4": ("mixtral", _recipe("qlora", rank=4, dropout=0.0)),
    "mixtral-qlora-nf4-nodq-noprep-r16-qv": ("mixtral", _recipe("qlora", double_quant=False, kbit_prep=False,
                                                                rank=16, dropout=0.0, targets=QV)),
    "mixtral-lora-r4": ("mixtral", _recipe("lora", rank=4, dropout=0.0)),
    "mixtral-full": ("mixtral", _recipe("full")),
}
QUANT_CASES = [c for c, (_, r) in CASES.items() if r.quantized]
ADAPTER_CASES = [c for c, (_, r) in CASES.items() if r.trains_adapters]

# (case, recipe.optimizer): the optimizer is built on the case's trainable parameters after its backward.
OPTIMIZER_CASES = [
    *(("llama-qlora-nf4-dq-prep-r16", o) for o in
      ("adamw", "adamw_torch", "adamw_8bit", "paged_adamw_8bit", "adamw_32bit", "paged_adamw_32bit")),
    ("llama-qlora-bf16-adapters-r16", "adamw"),
    ("llama-qlora-bf16-adapters-r16", "adamw_8bit"),
    ("llama-lora-bf16-adapters-r4-qv", "adamw_torch"),
    ("llama-full", "adamw"),
    ("llama-full", "adamw_8bit"),
    ("qwen2-full", "adamw"),
    ("qwen2-qlora-nf4-dq-prep-r16", "paged_adamw_8bit"),
    ("mixtral-qlora-nf4-dq-prep-r4", "adamw_8bit"),
    ("mixtral-qlora-nf4-dq-prep-r4", "adamw"),
    ("mixtral-full", "adamw_torch"),
    ("phi3-qlora-nf4-dq-prep-r16", "paged_adamw_32bit"),
    ("gemma2-qlora-nf4-dq-prep-r16", "adamw_8bit"),
]


# --------------------------------------------------------------------------------------------------
# byte counting


def _nbytes(t) -> int:
    return t.numel() * t.element_size()


def distinct_bytes(tensors) -> int:
    """Bytes of the distinct tensors: two tensors at the same address (tied weights, shared qmaps) count once."""
    seen: dict[tuple, int] = {}
    for t in tensors:
        if t is None or t.numel() == 0:
            continue
        key = (t.device.type, t.data_ptr())
        seen[key] = max(seen.get(key, 0), _nbytes(t))
    return sum(seen.values())


def _is_lora(name: str) -> bool:
    return ".lora_" in name


def base_bytes_of(model) -> int:
    """Every parameter and buffer except LoRA parameters; QuantState tensors are not parameters, so excluded."""
    tensors = [p for n, p in model.named_parameters(remove_duplicate=False) if not _is_lora(n)]
    tensors += [b for _, b in model.named_buffers(remove_duplicate=False)]
    return distinct_bytes(tensors)


def _quant_state_tensors(qs):
    for value in vars(qs).values():
        if torch.is_tensor(value):
            yield value
        elif isinstance(value, bnb.functional.QuantState):  # state2 (double quant)
            yield from _quant_state_tensors(value)


def linear4bit_modules(model):
    return [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]


def quant_constant_bytes_of(model) -> int:
    """Every tensor of every Linear4bit's QuantState, each QuantState counted once per layer."""
    total = 0
    for m in linear4bit_modules(model):
        total += sum(_nbytes(t) for t in _quant_state_tensors(m.weight.quant_state))
    return total


def linear4bit_bias_bytes_of(model) -> int:
    return sum(_nbytes(m.bias) for m in linear4bit_modules(model) if m.bias is not None)


def lora_bytes_of(model) -> int:
    return distinct_bytes(p for n, p in model.named_parameters() if _is_lora(n) and p.requires_grad)


def trainable_params_of(model):
    return [p for p in model.parameters() if p.requires_grad]  # parameters() yields tied storage once


# --------------------------------------------------------------------------------------------------
# building the real objects


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Lazily save one random bf16 checkpoint per architecture (shared by every case of that architecture)."""
    root = tmp_path_factory.mktemp("ckpt")
    paths: dict[str, str] = {}

    def get(arch: str) -> str:
        if arch not in paths:
            cfg = CONFIGS[arch]
            config = transformers.AutoConfig.for_model(**cfg)
            torch.manual_seed(0)
            model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
            path = root / arch
            model.save_pretrained(path)
            paths[arch] = str(path)
        return paths[arch]

    return get


def _bnb_config(recipe: Recipe):
    return transformers.BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=recipe.quant,
        bnb_4bit_use_double_quant=recipe.double_quant,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )


def _requantize(model, recipe: Recipe) -> None:
    """Re-quantize every Linear4bit with ``recipe.blocksize`` through bitsandbytes' public API."""
    for m in linear4bit_modules(model):
        w = m.weight
        dense = bnb.functional.dequantize_4bit(w.data, w.quant_state).to(torch.bfloat16)
        m.weight = bnb.nn.Params4bit(
            dense, requires_grad=False, blocksize=recipe.blocksize, compress_statistics=recipe.double_quant,
            quant_type=recipe.quant, quant_storage=torch.uint8, module=m,
        ).to("cpu")  # not yet quantized: .to(device) quantizes (Params4bit._quantize)
        assert m.weight.quant_state.blocksize == recipe.blocksize


def load_base(path: str, recipe: Recipe, tmp_dir):
    """The base model as the recipe loads it (before peft)."""
    if recipe.quantized:
        model = transformers.AutoModelForCausalLM.from_pretrained(
            path, quantization_config=_bnb_config(recipe), dtype=torch.bfloat16, device_map="cpu")
        if recipe.blocksize != 64:
            _requantize(model, recipe)
            model.save_pretrained(tmp_dir)  # a pre-quantized checkpoint with blocksize-128 quant states
            model = transformers.AutoModelForCausalLM.from_pretrained(
                tmp_dir, dtype=torch.bfloat16, device_map="cpu")
        if recipe.kbit_prep:
            model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=recipe.grad_ckpt)
    else:
        model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16, device_map="cpu")
    return model


def _lora_config(recipe: Recipe):
    targets = "all-linear" if "all-linear" in recipe.targets else list(recipe.targets)
    return peft.LoraConfig(r=recipe.rank, lora_alpha=recipe.alpha, lora_dropout=recipe.dropout,
                           target_modules=targets, task_type="CAUSAL_LM")


@dataclasses.dataclass
class Built:
    arch: str
    recipe: Recipe
    shape: object
    model: object
    config_path: str
    base_loaded: int  # after loading (+ kbit prep), before peft
    quant_loaded: int
    lora: int
    bias4_loaded: int = 0  # bytes of the Linear4bit biases, after loading and after the step
    bias4_after_step: int = 0
    base_after_step: int = 0
    quant_after_step: int = 0
    grads: int = 0
    n_linear4bit: int = 0


@pytest.fixture(scope="module")
def built(checkpoints, tmp_path_factory):
    """Build each case once: load, (prep), peft, forward + backward. Cached for the whole module."""
    cache: dict[str, Built] = {}

    def get(case: str) -> Built:
        if case in cache:
            return cache[case]
        arch, recipe = CASES[case]
        recipe.validate()
        path = checkpoints(arch)
        shape = shape_from_config(CONFIGS[arch], name=f"tiny-{arch}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = load_base(path, recipe, tmp_path_factory.mktemp(f"{case}-prequant"))
            base_loaded = base_bytes_of(model)
            bias4_loaded = linear4bit_bias_bytes_of(model)
            quant_loaded = quant_constant_bytes_of(model)
            if recipe.trains_adapters:
                model = peft.get_peft_model(model, _lora_config(recipe),
                                            autocast_adapter_dtype=recipe.adapter_dtype == "fp32")
            b = Built(arch, recipe, shape, model, os.path.join(path, "config.json"), base_loaded, quant_loaded,
                      lora_bytes_of(model), bias4_loaded=bias4_loaded, n_linear4bit=len(linear4bit_modules(model)))
            model.train()  # the Linear4bit CPU inference repack only happens in eval mode without grad
            torch.manual_seed(1)
            ids = torch.randint(0, VOCAB, (2, 16))
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            del loss
        b.grads = distinct_bytes(p.grad for p in trainable_params_of(model))
        assert all(p.grad is not None for p in trainable_params_of(model))
        b.base_after_step = base_bytes_of(model)
        b.bias4_after_step = linear4bit_bias_bytes_of(model)
        b.quant_after_step = quant_constant_bytes_of(model)
        cache[case] = b
        return b

    return get


# --------------------------------------------------------------------------------------------------
# tests


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_real_saved_config_gives_same_shape(arch, checkpoints):
    """The config.json transformers writes (all defaults filled in) gives the same inventory as the dict."""
    shape = shape_from_config(CONFIGS[arch], name=f"tiny-{arch}")
    saved = read_config(Path(checkpoints(arch)) / "config.json")
    again = shape_from_config(saved, name=f"tiny-{arch}")
    assert again.groups == shape.groups
    assert again.tie_word_embeddings == shape.tie_word_embeddings
    assert again.dtype == shape.dtype == "bf16"


@pytest.mark.parametrize("case", list(CASES))
def test_real_base_weight_bytes(case, built):
    """The base model as it sits during training (after a step). The only thing a step changes is the dtype of
    Linear4bit biases (see test_real_linear4bit_bias_dtype); everything else is byte-identical to the loaded model."""
    b = built(case)
    expected = memory.base_weight_bytes(b.shape, b.recipe)
    assert b.base_loaded - b.bias4_loaded == b.base_after_step - b.bias4_after_step
    assert b.base_after_step == expected, f"during training: real {b.base_after_step} B, planner {expected} B"


@pytest.mark.parametrize("case", list(CASES))
def test_real_quant_constant_bytes(case, built):
    b = built(case)
    expected = memory.quant_constant_bytes(b.shape, b.recipe)
    n_quantized = sum(g.count for g in b.shape.groups if g.quantized) if b.recipe.quantized else 0
    assert b.n_linear4bit == n_quantized
    assert b.quant_loaded == expected, f"real {b.quant_loaded} B, planner {expected} B"
    assert b.quant_after_step == expected


@pytest.mark.parametrize("case", QUANT_CASES)
def test_real_quant_state_settings(case, built):
    """The loaded QuantStates really have the recipe's quant type, blocksize and double quant."""
    b = built(case)
    for m in linear4bit_modules(b.model):
        qs = m.weight.quant_state
        assert (qs.quant_type, qs.blocksize, qs.nested) == (b.recipe.quant, b.recipe.blocksize,
                                                            b.recipe.double_quant)
        assert _nbytes(m.weight) == memory.packed_4bit_bytes(qs.shape.numel())


@pytest.mark.parametrize("case", ADAPTER_CASES)
def test_real_lora_adapter_bytes(case, built):
    b = built(case)
    expected = memory.lora_adapter_bytes(b.shape, b.recipe, b.recipe.rank)
    assert b.lora == expected, f"real {b.lora} B, planner {expected} B"
    want = torch.float32 if b.recipe.adapter_dtype == "fp32" else torch.bfloat16
    assert {p.dtype for p in trainable_params_of(b.model)} == {want}


@pytest.mark.parametrize("case", list(CASES))
def test_real_trainable_params(case, built):
    b = built(case)
    real = sum(p.numel() for p in trainable_params_of(b.model))
    assert real == memory.trainable_params(b.shape, b.recipe, b.recipe.rank)


@pytest.mark.parametrize("case", list(CASES))
def test_real_gradient_bytes(case, built):
    b = built(case)
    expected = memory.gradient_bytes(b.shape, b.recipe, b.recipe.rank)
    assert b.grads == expected, f"real {b.grads} B, planner {expected} B"


def _make_optimizer(name: str, params):
    if name == "adamw":
        return torch.optim.AdamW(params, lr=1e-4, fused=True)
    if name == "adamw_torch":
        return torch.optim.AdamW(params, lr=1e-4, foreach=True)
    if name == "adamw_8bit":
        return bnb.optim.AdamW8bit(params, lr=1e-4)
    if name == "paged_adamw_8bit":
        return bnb.optim.PagedAdamW8bit(params, lr=1e-4)
    if name == "adamw_32bit":
        return bnb.optim.AdamW32bit(params, lr=1e-4)
    if name == "paged_adamw_32bit":
        return bnb.optim.PagedAdamW32bit(params, lr=1e-4)
    raise AssertionError(name)


def optimizer_state_bytes_of(opt, name: str) -> int:
    tensors = []
    for state in opt.state.values():
        for key, value in state.items():
            if not torch.is_tensor(value):
                continue  # bitsandbytes' step is a Python int
            if key == "step" and name == "adamw_torch":
                continue  # foreach (not fused/capturable) keeps step on the CPU even for GPU parameters
            tensors.append(value)
    return distinct_bytes(tensors)


@pytest.mark.parametrize("case,optimizer", OPTIMIZER_CASES, ids=[f"{c}-{o}" for c, o in OPTIMIZER_CASES])
def test_real_optimizer_state_bytes(case, optimizer, built):
    b = built(case)
    recipe = dataclasses.replace(b.recipe, optimizer=optimizer)
    params = trainable_params_of(b.model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            opt = _make_optimizer(optimizer, params)
            opt.step()
        except (RuntimeError, NotImplementedError) as exc:  # an op without a CPU kernel in this build
            pytest.skip(f"{optimizer} cannot step on bitsandbytes' CPU backend: {type(exc).__name__}: {exc}")
    assert len(opt.state) == len(params)
    real = optimizer_state_bytes_of(opt, optimizer)
    alloc, paged = memory.optimizer_state_bytes(b.shape, recipe, recipe.rank)
    assert real == alloc + paged, f"real {real} B, planner {alloc} + {paged} (paged) B"
    if optimizer in ("adamw_8bit", "paged_adamw_8bit"):
        dtypes = {v.dtype for s in opt.state.values() for k, v in s.items() if k in ("state1", "state2")}
        big = [p for p in params if p.numel() >= memory.BNB_MIN_8BIT_SIZE]
        small = [p for p in params if p.numel() < memory.BNB_MIN_8BIT_SIZE]
        assert (torch.uint8 in dtypes) == bool(big) and (torch.float32 in dtypes) == bool(small)


@pytest.mark.parametrize("case", [c for c in QUANT_CASES if CASES[c][0] == "qwen2"])
def test_real_linear4bit_bias_dtype(case, built):
    """Pins the mechanism behind the bias bytes: prepare_model_for_kbit_training upcasts Linear4bit biases to fp32,
    and the first Linear4bit.forward casts them in place to the compute dtype (bitsandbytes nn/modules.py
    ``bias.data = bias.data.to(x.dtype)`` after ``x = x.to(self.compute_dtype)``), so during training they are
    bf16 whatever the upcast."""
    b = built(case)
    biases = [m.bias for m in linear4bit_modules(b.model) if m.bias is not None]
    assert biases and {t.dtype for t in biases} == {torch.bfloat16}


def test_real_mixtral_experts_refuse_lora_dropout(checkpoints):
    """peft's lora.ParamWrapper (the fused 3-D experts) raises for lora_dropout != 0: a Mixtral recipe must use 0."""
    model = transformers.AutoModelForCausalLM.from_pretrained(checkpoints("mixtral"), dtype=torch.bfloat16,
                                                             device_map="cpu")
    with pytest.raises(ValueError, match="lora_dropout"):
        peft.get_peft_model(model, _lora_config(_recipe("lora", rank=4, dropout=0.05)))
