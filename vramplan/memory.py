"""One pure function per memory component. Integer bytes in, integer bytes out.

Every function takes the model shape (plain ints) and recipe knobs. Numeric knobs (tokens, seq, rank) may be
Python ints *or* numpy integer arrays of scenarios: the formulas use only ``+ - * //`` and the helpers
below, so the sweep engine evaluates a whole grid with the same code that plans one scenario.

Each constant cites the library code or the report it comes from; tests/test_memory.py and
tests/test_real_objects.py hold the formulas to measured and real-object bytes.
Versions modelled: torch 2.13, transformers 5.23, peft 0.21.2, bitsandbytes 0.50.2.
"""

from __future__ import annotations

from .errors import ScenarioError
from .spec import DTYPE_BYTES, OPTIMIZERS, ModelShape, ParamGroup, Recipe

MiB = 1024**2

# --- bitsandbytes 4-bit storage (functional.py quantize_4bit) -------------------------------------
NF4_CODE_BYTES = 64  # fp32[16] quant_map, one copy per quantized layer (get_4bit_type)
DYNAMIC_CODE_BYTES = 1024  # fp32[256] 8-bit "dynamic" map for the nested absmax, copied per layer
NESTED_BLOCKSIZE = 256  # double quant quantizes the absmax in blocks of 256 (functional.py, compress_statistics)
OFFSET_BYTES = 4  # fp32 scalar: mean of the absmax, subtracted before nesting

# --- bitsandbytes optimizers (optim/optimizer.py) ---------------------------------------------------
BNB_STATE_BLOCK = 256  # 8-bit state absmax: one fp32 per 256 elements
BNB_MIN_8BIT_SIZE = 4096  # tensors smaller than this keep 32-bit state (Optimizer8bit min_8bit_size)
BNB_PAGE_MIN_NUMEL = 100_000  # only state of params with numel >= 1e5 is paged (get_state_buffer)
BNB_QMAP_BYTES = 2 * 256 * 4  # two shared fp32[256] quantization maps for 8-bit state

# --- CUDA, cuBLAS, the caching allocator ------------------------------------------------------------
# CUDA context with lazy module loading plus the kernels a training step loads (cuBLAS, cuDNN-free
# attention, bitsandbytes). pytorch PR #86509 measured 287 MB for a bare lazy context; PyTorch staff put a
# working context at ~300-500 MiB (pytorch#107667, #109888). An estimate until profiles calibrate it.
CUDA_CONTEXT_BYTES = 512 * MiB
# cuBLAS workspace per (handle, stream): CUBLAS_WORKSPACE_CONFIG default ":4096:2:16:8" = 8.125 MiB, and
# 32 MiB on sm90+ (pytorch PR #89027). Forward runs on the Python thread and backward on the autograd
# engine's device thread, each with its own handle: two workspaces.
CUBLAS_WORKSPACE_BYTES = 4096 * 1024 * 2 + 16 * 1024 * 8  # 8.125 MiB
CUBLAS_WORKSPACE_HOPPER_BYTES = 32 * MiB
CUBLAS_HANDLES = 2
# Reserved minus allocated at the peak: blocks split and cached by the allocator. Reported between ~2 %
# (vllm-project/compressed-tensors#587, reserving 5 %) and ~34 % (torchtune#1185 without expandable
# segments). 5 % of the memory that churns during the step (activations, gradients, transients) is a stated
# estimate, not a fit; calibration against profiles replaces it.
ALLOCATOR_SLACK_FRACTION_PCT = 5
ALLOC_ROUND = 512  # kMinBlockSize: every allocation is rounded up to 512 B (CUDACachingAllocator.cpp)

# --- transformers / torch activations -------------------------------------------------------------
BATCH_TENSOR_BYTES_PER_TOKEN = 3 * 8  # input_ids, attention_mask, labels: int64 each
RMSNORM_SAVED_SCALAR = 4  # fp32 rsqrt per token saved by each RMSNorm
# Dropout keeps a mask per element: CUDA's fused native_dropout returns a bool mask (1 B). (On CPU,
# _dropout_impl saves a noise tensor in the input dtype instead: aten/src/ATen/native/Dropout.cpp.)
DROPOUT_MASK_BYTES = 1
LOSS_BWD_BYTES_PER_LOGIT = 12  # log_softmax output + its grad + grad_input, all fp32 (section 6)
LOSS_HELD_BYTES_PER_LOGIT = 4  # log_softmax output saved for backward (fp32)


# --------------------------------------------------------------------------------------------------
# helpers that work on ints and on numpy arrays


def cdiv(a, b):
    """Ceiling division for ints and integer arrays."""
    return -(-a // b)


def vmax(*values):
    """Element-wise maximum of ints or arrays (numpy only when an array is present)."""
    if any(hasattr(v, "shape") for v in values):
        import numpy as np

        out = values[0]
        for v in values[1:]:
            out = np.maximum(out, v)
        return out
    return max(values)


def _ge(a, b):
    """a >= b as 1/0, for ints and arrays."""
    r = a >= b
    return r.astype("int64") if hasattr(r, "astype") else int(r)


def dtype_bytes(name: str) -> int:
    return DTYPE_BYTES[name]


# --------------------------------------------------------------------------------------------------
# static components


def _param_dtype_bytes(recipe: Recipe) -> int:
    """Bytes per element of parameters that are not 4-bit: the load dtype, or fp32 after kbit prep."""
    return 4 if recipe.upcast else dtype_bytes(recipe.dtype)


def rotary_buffer_bytes(model: ModelShape) -> int:
    """inv_freq and original_inv_freq: two fp32 buffers of head_dim/2 (LlamaRotaryEmbedding)."""
    return 2 * 4 * (model.head_dim // 2)


def buffer_bytes(model: ModelShape, recipe: Recipe) -> int:
    """Non-parameter buffers: rotary tables (fp32), and Gemma 2's 0-dim ``embed_scale`` in the load dtype
    (Gemma2TextScaledWordEmbedding; buffers are not upcast by kbit prep)."""
    return rotary_buffer_bytes(model) + (dtype_bytes(recipe.dtype) if model.scaled_embedding else 0)


def packed_4bit_bytes(numel: int) -> int:
    """bnb quantize_4bit output: two 4-bit codes per byte, (n+1)//2 bytes (_ops.py), whatever quant_storage."""
    return (numel + 1) // 2


def base_weight_bytes(model: ModelShape, recipe: Recipe) -> int:
    """Frozen (LoRA, QLoRA) or trained (full) base parameters and buffers as they sit on the GPU.

    4-bit recipes store every quantized Linear as ceil(n/2) bytes; everything else (embeddings, norms, lm_head,
    biases, fp16/bf16 experts that transformers 5 does not quantize) stays in the load dtype, or fp32 after
    prepare_model_for_kbit_training (peft utils/other.py: casts every non-Params4bit float parameter).
    Leaves out: nothing at tensor level; 512 B allocator rounding is in the overhead.
    """
    b = _param_dtype_bytes(recipe)
    total = buffer_bytes(model, recipe)
    for g in model.groups:
        if g.tied:
            continue
        if recipe.quantized and g.quantized:
            # Linear4bit.forward casts its bias in place to the compute dtype (bnb nn/modules.py
            # `self.bias.data = self.bias.data.to(x.dtype)`), undoing kbit prep's fp32 upcast after step one.
            total += g.count * (packed_4bit_bytes(g.numel) + g.bias * dtype_bytes(recipe.dtype))
        else:
            total += g.count * (g.numel + g.bias) * b
    return total


def quant_constant_bytes_per_tensor(numel: int, blocksize: int, double_quant: bool) -> int:
    """QuantState bytes of one 4-bit weight (bitsandbytes functional.py quantize_4bit).

    No double quant: fp32 absmax per block + the 16-entry code: 4*nb + 64.
    Double quant: uint8 absmax per block, fp32 absmax per 256 of those, fp32 offset, the 16-entry code and
    the 256-entry dynamic code: nb + 4*ceil(nb/256) + 4 + 64 + 1024.
    """
    nb = cdiv(numel, blocksize)
    if double_quant:
        return nb + 4 * cdiv(nb, NESTED_BLOCKSIZE) + OFFSET_BYTES + NF4_CODE_BYTES + DYNAMIC_CODE_BYTES
    return 4 * nb + NF4_CODE_BYTES


def quant_constant_bytes(model: ModelShape, recipe: Recipe) -> int:
    """All quantization constants of a 4-bit model; 0 for 16-bit recipes."""
    if not recipe.quantized:
        return 0
    return sum(
        g.count * quant_constant_bytes_per_tensor(g.numel, recipe.blocksize, recipe.double_quant)
        for g in model.groups
        if g.quantized
    )


def lora_groups(model: ModelShape, recipe: Recipe) -> list[ParamGroup]:
    """The parameter groups peft wraps for the recipe's target modules."""
    available = model.lora_targets()
    if "all-linear" in recipe.targets:
        names = set(available)
    else:
        unknown = [t for t in recipe.targets if t not in available]
        if unknown:
            raise ScenarioError(
                f"unknown target module {', '.join(unknown)} for {model.name}; use all-linear or some of: "
                f"{','.join(available)}"
            )
        names = set(recipe.targets)
    return [g for g in model.groups if g.lora_target in names]


def check_recipe(model: ModelShape, recipe: Recipe) -> None:
    """Refuse recipes the real libraries refuse: peft's ParamWrapper (fused MoE experts) raises on dropout."""
    if recipe.trains_adapters and recipe.dropout > 0 and any(g.kind == "experts" for g in lora_groups(model, recipe)):
        raise ScenarioError(
            f"peft cannot apply LoRA dropout to the fused experts of {model.name} (ParamWrapper raises); use "
            f"--dropout 0, or --targets without experts, e.g. --targets q_proj,k_proj,v_proj,o_proj"
        )


def lora_tensor_shapes(model: ModelShape, recipe: Recipe, rank):
    """(numel, count) of every LoRA tensor: lora_A is (r*m*E, in), lora_B is (out, r*m*E) (peft layer.py)."""
    out = []
    for g in lora_groups(model, recipe):
        experts, in_f, out_f = g.lora_in_out
        r = rank * g.lora_rank_mult * experts
        out.append((r * in_f, g.count))
        out.append((r * out_f, g.count))
    return out


def trainable_tensor_shapes(model: ModelShape, recipe: Recipe, rank):
    """(numel, count) of every trainable tensor: LoRA tensors, or every parameter for full fine-tuning."""
    if recipe.trains_adapters:
        return lora_tensor_shapes(model, recipe, rank)
    shapes = []
    for g in model.groups:
        if g.tied:
            continue
        shapes.append((g.numel, g.count))
        if g.bias:
            shapes.append((g.bias, g.count))
    return shapes


def trainable_params(model: ModelShape, recipe: Recipe, rank) -> int:
    """Number of trainable parameters."""
    return sum(n * c for n, c in trainable_tensor_shapes(model, recipe, rank))


def _trainable_dtype_bytes(recipe: Recipe) -> int:
    return dtype_bytes(recipe.adapter_dtype) if recipe.trains_adapters else dtype_bytes(recipe.dtype)


def lora_adapter_bytes(model: ModelShape, recipe: Recipe, rank) -> int:
    """LoRA A and B matrices in the adapter dtype (peft default fp32: autocast_adapter_dtype=True); 0 for full.

    Leaves out: lora_bias / DoRA magnitude vectors (not knobs here).
    """
    if not recipe.trains_adapters:
        return 0
    return trainable_params(model, recipe, rank) * dtype_bytes(recipe.adapter_dtype)


def gradient_bytes(model: ModelShape, recipe: Recipe, rank) -> int:
    """Gradients of every trainable parameter, in the parameter dtype, all alive at the end of backward."""
    return trainable_params(model, recipe, rank) * _trainable_dtype_bytes(recipe)


def layer_gradient_bytes(model: ModelShape, recipe: Recipe, rank) -> int:
    """Gradients one decoder layer adds when its backward runs."""
    per = 0
    if recipe.trains_adapters:
        for numel, count in lora_tensor_shapes(model, recipe, rank):
            per += numel * (count // model.num_layers if count >= model.num_layers else 0)
    else:
        for g in model.groups:
            if g.count >= model.num_layers and g.name.startswith("model.layers."):
                per += (g.numel + g.bias) * (g.count // model.num_layers)
    return per * _trainable_dtype_bytes(recipe)


def optimizer_state_bytes(model: ModelShape, recipe: Recipe, rank) -> tuple:
    """(allocated, paged) bytes of persistent optimizer state.

    torch AdamW: exp_avg + exp_avg_sq in the parameter dtype, plus a 4-byte ``step`` tensor per parameter on
    the GPU when fused. bitsandbytes 8-bit: uint8 state1/state2 + fp32 absmax per 256 elements; tensors under
    4096 elements keep fp32 state. Paged variants put state1/state2 of tensors with >= 1e5 elements in CUDA
    managed memory, which torch's allocator never sees; absmax stays ordinary.
    """
    impl, bits, paged = OPTIMIZERS[recipe.optimizer]
    pb = _trainable_dtype_bytes(recipe)
    alloc = 0
    paged_bytes = 0
    shapes = trainable_tensor_shapes(model, recipe, rank)
    if impl == "torch_sgd":
        return 0, 0
    if impl.startswith("torch"):
        for numel, count in shapes:
            alloc += count * (2 * numel * pb + (4 if impl == "torch_fused" else 0))
        return alloc, paged_bytes
    # bitsandbytes: the two shared qmaps reach the GPU only with the first 8-bit state (optimizer.py init_state)
    if bits == 8 and shapes:
        alloc += BNB_QMAP_BYTES * _ge(vmax(*(n for n, _ in shapes)), BNB_MIN_8BIT_SIZE)
    for numel, count in shapes:
        if bits == 8:
            is8 = _ge(numel, BNB_MIN_8BIT_SIZE)
            state = is8 * 2 * numel + (1 - is8) * 8 * numel
            absmax = is8 * 2 * 4 * cdiv(numel, BNB_STATE_BLOCK)
        else:
            state = 8 * numel
            absmax = 0
        if paged:
            on_pages = _ge(numel, BNB_PAGE_MIN_NUMEL)
            paged_bytes += count * on_pages * state
            alloc += count * ((1 - on_pages) * state + absmax)
        else:
            alloc += count * (state + absmax)
    return alloc, paged_bytes


def optimizer_step_transient_bytes(model: ModelShape, recipe: Recipe, rank) -> int:
    """Temporaries inside optimizer.step(): foreach AdamW holds sqrt(exp_avg_sq) for the whole group
    (torch/optim/adam.py _multi_tensor_adam, measured 4.000 B/param); fused and bitsandbytes kernels: 0."""
    impl, _, _ = OPTIMIZERS[recipe.optimizer]
    if impl == "torch_foreach":
        return trainable_params(model, recipe, rank) * _trainable_dtype_bytes(recipe)
    return 0


# --------------------------------------------------------------------------------------------------
# activations


def stream_bytes(recipe: Recipe) -> int:
    """Bytes per element of the residual stream: fp32 after kbit prep (fp32 embeddings and norms), else 2."""
    return 4 if recipe.upcast else dtype_bytes(recipe.dtype)


def sliding_mask_applies(model: ModelShape, recipe: Recipe, seq):
    """True (element-wise for arrays) when transformers builds a sliding-window mask for SDPA: seq > window."""
    if model.sliding_window is None or effective_attn(model, recipe) != "sdpa":
        return seq < 0  # False, or an all-False array
    return seq > model.sliding_window


def sliding_mask_shared_bytes(model: ModelShape, recipe: Recipe, tokens, seq):
    """The bool sliding-window mask transformers builds once per forward: batch x S x S bytes (T x S)."""
    return tokens * seq * sliding_mask_applies(model, recipe, seq)


def effective_attn(model: ModelShape, recipe: Recipe) -> str:
    """The attention implementation transformers runs: Gemma 2 has no SDPA path (softcapping) and uses eager."""
    if recipe.attn == "sdpa" and not model.sdpa_supported:
        return "eager"
    return recipe.attn


def _lora_input_bytes(in_f: int, x_bytes: int, recipe: Recipe, modules: int, already_saved: bool):
    """Bytes per token that the LoRA branches of ``modules`` modules sharing one input x save for lora_A.

    peft (tuners/lora/bnb.py, layer.py): without autocast x is cast to the adapter dtype first (a copy per
    module when dtypes differ); dropout p>0 makes a new tensor per module plus a bool mask (CUDA
    native_dropout, 1 B/elem); under autocast lora_A casts its input to bf16, a copy per module when x is
    not bf16 already. With none of these, the modules share x, saved once (or not at all when another op
    saves it already, e.g. the SDPA output feeding o_proj).
    """
    lora_in_bytes = 2 if recipe.autocast else dtype_bytes(recipe.adapter_dtype)
    if recipe.dropout > 0:
        return modules * in_f * (DROPOUT_MASK_BYTES + lora_in_bytes)
    if x_bytes != lora_in_bytes:
        return modules * in_f * lora_in_bytes
    return 0 if already_saved else in_f * x_bytes


def layer_activation_items(model: ModelShape, recipe: Recipe, seq, rank) -> dict:
    """Bytes **per token** one decoder layer saves for backward, itemized (no gradient checkpointing).

    Derived op by op for a frozen base plus LoRA (and for full fine-tuning, where base linears save their
    inputs); checked to the byte against saved-tensor measurements of the Llama layer (tests/test_memory.py):
    bf16 LoRA: 16h + 4kvd + 4nh + 8i + 14r + 8; QLoRA + kbit prep + autocast: 22h + 4kvd + 4nh + 14i + 14r + 8.
    Leaves out: padding masks (SDPA with a mask repeats k/v: +4h - 4kvd), MoE routing buffers (approximate),
    the memory-efficient kernel's padded logsumexp for fp32 attention.
    """
    h, i = model.hidden_size, model.intermediate_size
    qd, kvd, nh = model.q_dim, model.kv_dim, model.num_heads
    bs = stream_bytes(recipe)  # residual stream and norm outputs
    lora = recipe.trains_adapters
    full = recipe.method == "full"
    # dtype of base projection outputs: Linear4bit returns its input dtype; 16-bit linears the weight dtype
    # (or bf16 under autocast)
    lin_out = bs if recipe.quantized else dtype_bytes(recipe.dtype)
    targets = {g.lora_target for g in lora_groups(model, recipe)} if lora else set()
    items: dict = {}

    items["norms"] = model.norms_per_layer * (4 * h + RMSNORM_SAVED_SCALAR)
    if model.qk_norm:
        items["qk_norms"] = 4 * qd + 4 * nh + 4 * kvd + 4 * model.num_kv_heads

    # attention inputs (q/k/v projections share the norm output x)
    if model.fused_qkv:
        qkv_names = ["qkv_proj"]
    else:
        qkv_names = ["q_proj", "k_proj", "v_proj"]
    if full:
        items["qkv_input"] = h * bs
    else:
        n = sum(1 for t in qkv_names if t in targets)
        items["lora_qkv_input"] = _lora_input_bytes(h, bs, recipe, n, False) if n else 0

    attn = effective_attn(model, recipe)
    qkv_bytes = lin_out
    ab = 2 if recipe.autocast else qkv_bytes  # SDPA / matmuls run in bf16 under autocast
    if attn in ("sdpa", "flash"):
        items["attention"] = ab * (2 * qd + 2 * kvd) + 4 * nh  # q, k, v, out + fp32 logsumexp
        o_input_saved = True  # the o_proj input is the SDPA output, saved by SDPA already
        if model.fused_qkv and qkv_bytes == ab:
            # v is a view of the fused qkv output: saving v keeps the whole (q, k, v) storage alive (q and k are
            # new tensors after RoPE). Under a dtype-changing autocast SDPA saves copies instead.
            items["qkv_view"] = qkv_bytes * (qd + kvd)
        if attn == "sdpa" and model.sliding_window is not None:
            # a sliding-window mask (seq > window): SDPA turns the bool mask into an additive one per call (S x S
            # per sequence in the compute dtype) and saves it for backward
            items["sliding_window_mask"] = ab * seq * sliding_mask_applies(model, recipe, seq)
    else:  # eager: q, repeated k and v, the o_proj input copy, fp32 softmax and its cast
        per_s = (4 + ab) * nh + (ab * nh if model.attn_softcap else 0)  # softcap: tanh output
        items["attention"] = ab * 3 * qd + per_s * seq
        items["attention_o_input"] = ab * qd
        o_input_saved = True
    if full:
        pass  # o_proj input already saved
    elif "o_proj" in targets:
        items["lora_o_input"] = _lora_input_bytes(qd, ab, recipe, 1, o_input_saved)

    # gated MLP: act saves its input, the product saves act out and up; down saves (or LoRA saves) its input
    mlp_b = lin_out
    width = i * (model.experts_per_token if model.is_moe else 1)
    items["mlp"] = 3 * width * mlp_b
    if full:
        items["mlp_inputs"] = h * bs + width * mlp_b
    elif model.is_moe:
        # experts' adapters are peft ParamWrappers; routing keeps router logits (fp32) per token
        items["router"] = 4 * model.num_experts
        if "experts" in targets:
            items["lora_mlp_inputs"] = _lora_input_bytes(h, bs, recipe, 1, False) + width * mlp_b
    else:
        gate_up = ["gate_up_proj"] if model.fused_gate_up else ["gate_proj", "up_proj"]
        n = sum(1 for t in gate_up if t in targets)
        items["lora_gate_up_input"] = _lora_input_bytes(h, bs, recipe, n, False) if n else 0
        if "down_proj" in targets:
            items["lora_down_input"] = _lora_input_bytes(i, mlp_b, recipe, 1, False)

    # lora_B saves lora_A's output (r values per token per module, bf16 under autocast)
    if lora:
        rb = 2 if recipe.autocast else dtype_bytes(recipe.adapter_dtype)
        r_total = 0
        for g in lora_groups(model, recipe):
            if g.kind != "experts":
                r_total += rank * g.lora_rank_mult
        items["lora_hidden"] = rb * r_total
    return items


def layer_activation_bytes(model: ModelShape, recipe: Recipe, tokens, seq, rank):
    """Bytes one decoder layer saves for backward at ``tokens`` tokens, including, under autocast with fp32
    adapters, the bf16 copies of its LoRA weights that the linears save (2 B per adapter parameter)."""
    per_tok = sum(layer_activation_items(model, recipe, seq, rank).values())
    const = 0
    if recipe.trains_adapters and recipe.autocast and dtype_bytes(recipe.adapter_dtype) != 2:
        const = 2 * trainable_params(model, recipe, rank) // model.num_layers
    const += merged_expert_bytes(model, recipe)["saved"]
    return per_tok * tokens + const


def checkpoint_input_bytes(model: ModelShape, recipe: Recipe, tokens):
    """Gradient checkpointing keeps each layer's input hidden state: T x h in the stream dtype."""
    return tokens * model.hidden_size * stream_bytes(recipe)


def logits_bytes_per_element(recipe: Recipe) -> int:
    """lm_head output dtype: bf16 under autocast, fp32 after kbit prep without autocast, else the load dtype."""
    if recipe.autocast:
        return 2
    return 4 if recipe.upcast else dtype_bytes(recipe.dtype)


def head_weight_copy_bytes(model: ModelShape, recipe: Recipe) -> int:
    """Under autocast an fp32 lm_head (after kbit prep) is cast to bf16 for the matmul and saved: V*h*2."""
    if recipe.autocast and recipe.upcast:
        return model.vocab_size * model.hidden_size * 2
    return 0


def loss_bytes(model: ModelShape, recipe: Recipe, tokens) -> dict:
    """Logits and cross-entropy (transformers ForCausalLMLoss: logits.float(), log_softmax, nll_loss).

    Returns per-phase bytes: ``forward`` (peak inside the loss), ``held`` (after forward, outputs dropped as
    the Trainer does), ``backward`` (log_softmax backward: saved + grad + grad_input, fp32).
    Final-logit softcapping (Gemma 2) keeps its tanh output too.
    """
    tv = tokens * model.vocab_size
    bl = logits_bytes_per_element(recipe)
    fwd = bl + (4 if bl != 4 else 0) + 4
    extra = bl if model.final_softcap else 0
    return {
        "forward": tv * (fwd + extra),
        "held": tv * (LOSS_HELD_BYTES_PER_LOGIT + extra),
        "backward": tv * (LOSS_BWD_BYTES_PER_LOGIT + extra),
    }


def working_set_bytes(model: ModelShape, recipe: Recipe, tokens) -> dict:
    """Short-lived tensors of one decoder layer that are not saved for backward (bytes at ``tokens``).

    Checked against traces of the real step (tests/test_agreement.py). Derived from the ops:

    * ``forward``: the moment lora_A of the down projection runs. Alive besides the saved tensors: the MLP
      product p (its input, i wide), peft's cast of p to the adapter dtype (plain linears always cast; 4-bit
      layers only without autocast), dropout's output when autocast makes lora_A save a bf16 copy instead,
      and three hidden-width tensors (the residual, the MLP's input and down's base output). Without a LoRA
      down projection: p and the three hidden-width tensors.
    * ``backward``: the MLP's backward, after the down projection's saved tensors are freed: three i-wide
      gradients at once (of p, of the activation and of up) and one hidden-width gradient.
    * ``backward_dequant``: for 4-bit layers, the moment bitsandbytes' MatMul4Bit backward multiplies by the
      dequantized weight (``dequant_buffer_bytes``, added by the caller): one i-wide gradient from the LoRA
      branch, the bf16 matmul output and the hidden-width gradient.
    * ``down_saved``: what the down projection saved (its LoRA input copies and dropout mask), freed by the
      time of the backward moments.
    """
    h, i = model.hidden_size, model.intermediate_size
    width = i * (model.experts_per_token if model.is_moe else 1)
    bs = stream_bytes(recipe)
    mlp_b = bs if recipe.quantized else dtype_bytes(recipe.dtype)
    extra = 0
    down_saved = 0
    targets = {g.lora_target for g in lora_groups(model, recipe)} if recipe.trains_adapters else set()
    if not model.is_moe and "down_proj" in targets:
        ad = dtype_bytes(recipe.adapter_dtype)
        cast = mlp_b != ad and (not recipe.quantized or not recipe.autocast)
        x_b = ad if cast else mlp_b
        extra = width * ((ad if cast else 0) + (x_b if recipe.dropout > 0 and recipe.autocast else 0))
        down_saved = _lora_input_bytes(i, mlp_b, recipe, 1, False)
    merged = merged_expert_bytes(model, recipe)
    return {
        # + three hidden-width tensors: the residual, the MLP's input (the norm output) and down's base output
        "forward": tokens * (width * mlp_b + extra + 2 * h * bs + h * mlp_b),
        # in a checkpoint's recompute with a 16-bit stream, traces show two more hidden-width 16-bit tensors
        # alive at that moment: an RMSNorm output and its cast back from fp32 (ops mul and _to_copy)
        "recompute_extra": tokens * (0 if recipe.upcast else 2 * h * bs),
        # a forward that saves nothing (checkpointed) peaks either there or where the MLP's act(gate), up and
        # their product exist at once, with the residual, the MLP's input and a base output
        "forward_product": tokens * (3 * width * mlp_b + 2 * h * bs + h * mlp_b),
        "backward": tokens * (3 * width * mlp_b + h * bs) + merged["backward"],
        "merged_experts": merged["saved"],
        "backward_dequant": tokens * (width * (mlp_b + 2) + h * bs) if recipe.quantized else 0,
        "down_saved": tokens * down_saved,
    }


def merged_expert_bytes(model: ModelShape, recipe: Recipe) -> dict:
    """peft's ParamWrapper (LoRA on fused 3-D MoE experts) adds the adapters' delta to the whole expert weight
    for each use, and grouped_mm saves that merged weight for its backward, which makes a gradient of the full
    weight. Traced on Mixtral (tests/test_agreement.py).

    ``saved``: one layer's merged expert weights (gate_up and down, every expert), saved like activations.
    ``backward``: on top of them, down's full-size weight gradient first; then gate_up's gradient while
    down's merged weight is already freed."""
    if not recipe.trains_adapters:
        return {"saved": 0, "backward": 0}
    groups = [g for g in lora_groups(model, recipe) if g.kind == "experts"]
    if not groups:
        return {"saved": 0, "backward": 0}
    b = 4 if recipe.upcast else dtype_bytes(recipe.dtype)
    per = {g.name: g.numel * g.count // max(model.num_layers, 1) * b for g in groups}
    total = sum(per.values())
    down = sum(v for k, v in per.items() if "down" in k)
    gate_up = total - down
    return {"saved": total, "backward": max(down, 2 * gate_up - total)}


def dequant_buffer_bytes(model: ModelShape, recipe: Recipe) -> dict:
    """bitsandbytes dequantizes one 4-bit weight at a time to the compute dtype (never kept).

    Forward (gemm_4bit fallback for more than a few tokens): the weight 2*N*K plus absmax_dq and its
    offset copy, 2 x 4*nb (double quant). Backward (MatMul4Bit.backward, F.dequantize_4bit): 2*N*K + 4*nb.
    The largest quantized weight sets the size. The forward one is inside a CUDA op: trace cannot see it.
    """
    if not recipe.quantized:
        return {"forward": 0, "backward": 0}
    biggest = max((g.numel for g in model.groups if g.quantized), default=0)
    nb = cdiv(biggest, recipe.blocksize)
    dq = 2 * 4 * nb if recipe.double_quant else 0
    return {"forward": 2 * biggest + dq, "backward": 2 * biggest + (4 * nb if recipe.double_quant else 0)}


def batch_tensor_bytes(model: ModelShape, tokens) -> int:
    """input_ids, attention_mask and labels (int64) on the GPU for the whole step."""
    return tokens * BATCH_TENSOR_BYTES_PER_TOKEN


def rope_bytes(model: ModelShape, recipe: Recipe, tokens) -> int:
    """cos and sin (B, S, head_dim) in the stream dtype, computed once and shared by every layer."""
    return 2 * tokens * model.head_dim * stream_bytes(recipe)


def final_norm_bytes(model: ModelShape, tokens) -> int:
    """The final RMSNorm saves its fp32 input and rsqrt; lm_head (frozen) saves no input."""
    return tokens * (4 * model.hidden_size + RMSNORM_SAVED_SCALAR)


# --------------------------------------------------------------------------------------------------
# overhead


def cuda_context_bytes() -> int:
    """CUDA context and loaded kernels: outside torch's allocator, inside NVML's figure (estimate)."""
    return CUDA_CONTEXT_BYTES


def cublas_workspace_bytes(hopper: bool) -> int:
    """cuBLAS workspaces of the forward and the backward thread, allocated through torch's allocator."""
    per = CUBLAS_WORKSPACE_HOPPER_BYTES if hopper else CUBLAS_WORKSPACE_BYTES
    return CUBLAS_HANDLES * per


def allocator_slack_bytes(churn_bytes):
    """Reserved minus allocated at the peak: a stated fraction of the memory that churns in the step."""
    return churn_bytes * ALLOCATOR_SLACK_FRACTION_PCT // 100


# --------------------------------------------------------------------------------------------------
# multi-GPU: FSDP full shard and DDP (per-GPU figures)

# DDP groups gradients into buckets of bucket_cap_mb = 25 MiB (torch DistributedDataParallel default; the HF
# Trainer's ddp_bucket_cap_mb=None keeps it). With gradient_as_bucket_view=False (the default, the Trainer
# does not set it) each bucket is a flat tensor beside the .grad tensors: a second copy of every gradient.
DDP_BUCKET_CAP_BYTES = 25 * MiB
DDP_GRADIENT_AS_BUCKET_VIEW = False


def _stored_param_bytes(model: ModelShape, recipe: Recipe, groups) -> int:
    """Bytes of the given parameter groups as they sit on the GPU (packed 4-bit or the parameter dtype),
    buffers excluded: ``base_weight_bytes`` restricted to those groups."""
    from dataclasses import replace

    return base_weight_bytes(replace(model, groups=tuple(groups)), recipe) - buffer_bytes(model, recipe)


def _is_layer_group(model: ModelShape, g: ParamGroup) -> bool:
    return g.name.startswith("model.layers.") and g.count >= model.num_layers


def fsdp_root_unit_bytes(model: ModelShape, recipe: Recipe) -> int:
    """Parameters outside the decoder layers (embeddings, final norm, untied lm_head): FSDP's root unit.

    The root unit is not resharded after forward (FSDP2 sets reshard_after_forward=False on the root, FSDP1
    skips the root's reshard: backward needs it at once), so it is whole on every GPU from forward to the end
    of backward.
    """
    return _stored_param_bytes(model, recipe, [g for g in model.groups if not _is_layer_group(model, g)])


def fsdp_layer_unit_bytes(model: ModelShape, recipe: Recipe) -> int:
    """Parameters of one decoder layer as stored (packed 4-bit weights in their storage bytes): one FSDP unit
    (transformers' auto-wrap policy wraps each decoder layer; LoRA layers are their own small units)."""
    per = _stored_param_bytes(model, recipe, [g for g in model.groups if _is_layer_group(model, g)])
    return cdiv(per, model.num_layers)


def fsdp_param_share_bytes(model: ModelShape, recipe: Recipe, n_gpus: int) -> int:
    """One GPU's shard of every parameter (flat parameters padded to a multiple of n: ceil per unit),
    plus the buffers, which FSDP does not shard."""
    root = fsdp_root_unit_bytes(model, recipe)
    layer = fsdp_layer_unit_bytes(model, recipe)
    return cdiv(root, n_gpus) + model.num_layers * cdiv(layer, n_gpus) + buffer_bytes(model, recipe)


def fsdp_gathered_bytes(model: ModelShape, recipe: Recipe, adapter_bytes) -> int:
    """Unsharded parameters alive at once on every GPU during forward and backward: the root unit, the
    decoder-layer unit in use and the next one, prefetched (forward_prefetch / BACKWARD_PRE), with their LoRA
    units. The shards stay allocated beside them. Counted in the stored dtype: an upper bound when FSDP's
    mixed precision gathers fp32 parameters in bf16.
    """
    layer_adapters = cdiv(adapter_bytes, model.num_layers)
    return fsdp_root_unit_bytes(model, recipe) + 2 * (fsdp_layer_unit_bytes(model, recipe) + layer_adapters)


def fsdp_gather_buffer_bytes(model: ModelShape, recipe: Recipe) -> int:
    """FSDP2 gathers a unit into one all-gather output buffer and then copies it into the unsharded parameters:
    for a moment both exist. The largest unit (the root: embeddings, lm_head, final norm) sets the size.
    Traced with torch.distributed FSDP2 on two CPU processes (tests/test_distributed.py)."""
    return max(fsdp_root_unit_bytes(model, recipe), fsdp_layer_unit_bytes(model, recipe))


def fsdp_reduce_scatter_bytes(layer_grad_bytes, n_gpus: int):
    """One unit's unsharded gradient (the reduce-scatter input) and its output shard."""
    return layer_grad_bytes + cdiv(layer_grad_bytes, n_gpus)


def ddp_bucket_bytes(grad_bytes):
    """DDP gradient buckets: a copy of every gradient (gradient_as_bucket_view=False), 0 as bucket views."""
    return 0 if DDP_GRADIENT_AS_BUCKET_VIEW else grad_bytes


def ddp_bucket_count(grad_bytes):
    """Number of 25 MiB buckets the gradients fill (the first bucket is capped at 1 MiB by DDP: +1 at most)."""
    return cdiv(grad_bytes, DDP_BUCKET_CAP_BYTES)
