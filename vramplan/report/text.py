"""Plain-language explanations, written from the numbers of the report they appear in.

Each paragraph states what a component is for this scenario and what a QLoRA lever (NF4, double
quantization, paged optimizers, checkpointing) changes, with the bytes computed here: counterfactuals are
planned (the same scenario with one knob flipped), never quoted from elsewhere. Output is plain text; the
page escapes it.
"""

from __future__ import annotations

from dataclasses import replace

from .. import memory as m
from ..plan import COMPONENTS, plan_scenario
from ..spec import OPTIMIZERS
from ..units import GiB, MiB
from .figures import COMPONENT_LABELS, METHOD_LABELS


def size(n_bytes) -> str:
    """Bytes for prose: '14.96 GiB' from 1 GiB up, '160.0 MiB' below, '512 B' for tiny sizes."""
    n = int(n_bytes)
    if abs(n) >= GiB:
        return f"{n / GiB:.2f} GiB"
    if abs(n) >= MiB // 10:
        return f"{n / MiB:.1f} MiB"
    return f"{n:,} B"


def count(n) -> str:
    """Parameter counts for prose: '8.03 B', '41.9 M', '12,288'."""
    n = int(n)
    if n >= 10**9:
        return f"{n / 1e9:.2f} B"
    if n >= 10**6:
        return f"{n / 1e6:.1f} M"
    return f"{n:,}"


def pct(part, whole) -> str:
    return f"{100 * part / whole:.1f} %" if whole else "0 %"


def label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def gpu_name(gpu) -> str:
    """'NVIDIA GeForce RTX 4090', or 'a GPU with 24 GiB' for a bare size."""
    bare = gpu.name.endswith(" GiB") and gpu.name[:-4].replace(".", "").isdigit()
    return f"a GPU with {gpu.name}" if bare else gpu.name


def verdict(plan) -> str:
    """'fits with 9.16 GiB to spare' / 'does not fit: over by 1.20 GiB' / ''."""
    if plan.fits is None:
        return ""
    if plan.fits:
        return f"fits with {size(plan.headroom_bytes)} to spare"
    return f"does not fit: over by {size(-plan.headroom_bytes)}"


def _quantized_params(model) -> int:
    return sum(g.numel * g.count for g in model.groups if g.quantized and not g.tied)


def _packed_bytes(model) -> int:
    return sum(m.packed_4bit_bytes(g.numel) * g.count for g in model.groups if g.quantized and not g.tied)


def summary(plans, gpu=None) -> list[str]:
    """One or two sentences: the peak per method, the verdict on the GPU, what QLoRA saves and where."""
    by = {p.method: p for p in plans}
    s = plans[0].scenario
    w = s.workload
    head = (f"{s.model.name} ({count(s.model.params)} parameters), sequence {w.seq:,} × batch {w.batch}"
            + (f", {w.gpus} GPUs ({w.shard}), memory per GPU" if w.gpus > 1 else "") + ".")
    parts = []
    for p in plans:
        v = verdict(p)
        parts.append(f"{label(p.method)} peaks at {size(p.peak_bytes)}" + (f" and {v} on {gpu_name(gpu)}" if v else ""))
    out = [head + " " + "; ".join(parts) + "."]
    if "lora" in by and "qlora" in by:
        lo, ql = by["lora"], by["qlora"]
        saved = lo.peak_bytes - ql.peak_bytes
        deltas = sorted(((ql.components[c] - lo.components[c], c) for c in COMPONENTS
                         if abs(ql.components[c] - lo.components[c]) >= MiB), key=lambda dc: -abs(dc[0]))
        parts = [f"{COMPONENT_LABELS[c]} {'+' if d > 0 else '−'}{size(abs(d))}" for d, c in deltas]
        if saved > 0:
            out.append(f"QLoRA needs {size(saved)} less than LoRA at the peak ({pct(saved, lo.peak_bytes)} less): "
                       + ", ".join(parts) + ".")
        else:
            out.append(f"QLoRA needs {size(-saved)} more than LoRA at the peak: " + ", ".join(parts) + ".")
    return out


def explain(plans) -> list[tuple[str, list[str]]]:
    """(heading, paragraphs) per component, from the plans of one scenario (any of lora / qlora / full)."""
    by = {p.method: p for p in plans}
    any_plan = plans[0]
    model = any_plan.scenario.model
    out = []

    # -- base weights and NF4 ------------------------------------------------------------------------
    paras = []
    for method in ("lora", "full"):
        if method in by:
            p = by[method]
            paras.append(f"{label(method)} keeps all {count(model.params)} parameters in "
                         f"{p.scenario.recipe.dtype}: {size(p.components['weights'])}.")
            break
    if "qlora" in by:
        q = by["qlora"]
        r = q.scenario.recipe
        qp, packed = _quantized_params(model), _packed_bytes(model)
        rest = q.components["weights"] - packed
        kept = "fp32 after prepare_model_for_kbit_training's upcast" if r.upcast else r.dtype
        paras.append(
            f"QLoRA stores the {count(qp)} parameters of the quantized linear layers ({pct(qp, model.params)} of "
            f"the model) in {r.quant.upper()}, two 4-bit codes per byte: {size(packed)}. The other "
            f"{count(model.params - qp)} parameters (embeddings, norms, the output head"
            f"{', the MoE experts' if model.is_moe else ''}) stay in {kept}: {size(rest)}, "
            f"{size(q.components['weights'])} in all."
        )
        if r.upcast and q.detail["kbit_prep_upcast_bytes"]:
            paras.append(f"The fp32 upcast alone costs {size(q.detail['kbit_prep_upcast_bytes'])}; "
                         "--no-kbit-prep keeps those layers in 16 bits.")
        if q.detail["dequant_forward_bytes"] or q.detail["dequant_backward_bytes"]:
            paras.append(
                f"4-bit weights are dequantized to {r.dtype} one layer at a time for each matrix multiply: "
                f"{size(max(q.detail['dequant_forward_bytes'], q.detail['dequant_backward_bytes']))} of "
                "short-lived buffers, counted with the activations."
            )
    out.append(("Base weights and NF4", paras))

    # -- quantization constants and double quantization -------------------------------------------------
    if "qlora" in by:
        q = by["qlora"]
        r = q.scenario.recipe
        here = q.components["quant_constants"]
        other = m.quant_constant_bytes(model, replace(r, double_quant=not r.double_quant))
        blocks = sum(m.cdiv(g.numel, r.blocksize) * g.count for g in model.groups if g.quantized and not g.tied)
        if r.double_quant:
            text = (f"Every block of {r.blocksize} 4-bit weights has a scale (its absmax): {count(blocks)} "
                    f"blocks. Stored as fp32 they would take {size(other)}; double quantization stores them in "
                    f"8 bits with one fp32 scale per {m.NESTED_BLOCKSIZE} blocks: {size(here)}, "
                    f"{size(other - here)} saved.")
        else:
            text = (f"Every block of {r.blocksize} 4-bit weights has an fp32 scale (its absmax): {count(blocks)} "
                    f"blocks, {size(here)}. Double quantization (--double-quant) would store them in 8 bits "
                    f"with one fp32 scale per {m.NESTED_BLOCKSIZE} blocks: {size(other)}, "
                    f"{size(here - other)} less.")
        out.append(("Quantization constants and double quantization", [text]))

    # -- adapters ------------------------------------------------------------------------------------
    adapters = [p for p in plans if p.scenario.recipe.trains_adapters]
    if adapters:
        p = adapters[0]
        r = p.scenario.recipe
        paras = [
            f"LoRA rank {r.rank} on {', '.join(r.targets)} adds {count(p.trainable_params)} trainable parameters "
            f"({pct(p.trainable_params, model.params)} of the model), in {r.adapter_dtype}: "
            f"{size(p.components['adapters'])}. They, their gradients and their optimizer state all grow "
            f"linearly with the rank."
        ]
        out.append(("LoRA adapters", paras))

    # -- gradients -----------------------------------------------------------------------------------
    paras = []
    for p in plans:
        r = p.scenario.recipe
        all_grads = m.gradient_bytes(model, r, r.rank)
        at_peak = p.components["gradients"]
        where = f"{p.peak_phase}, {p.peak_where}"
        if r.trains_adapters:
            paras.append(f"{label(p.method)}: only the adapters get gradients, {size(all_grads)} once backward "
                         f"has finished; at the peak ({where}) {size(at_peak)} of them exist.")
        else:
            paras.append(f"{label(p.method)}: every parameter gets a gradient, {size(all_grads)}; at the peak "
                         f"({where}) {size(at_peak)} exist.")
    out.append(("Gradients", paras))

    # -- optimizer and paged optimizers ---------------------------------------------------------------
    paras = []
    for p in plans:
        r = p.scenario.recipe
        impl, bits, paged = OPTIMIZERS[r.optimizer]
        state = p.components["optimizer"]
        text = f"{label(p.method)} uses {r.optimizer}: {size(state)} of state"
        if bits == 8:
            text += " (8-bit state with an fp32 scale per 256 values)"
        elif bits == 32:
            text += f" (two values per trainable parameter, {count(p.trainable_params)} parameters)"
        text += "."
        paged_bytes = p.detail["paged_optimizer_bytes"]
        if paged and paged_bytes:
            text += (f" It is paged: {size(paged_bytes)} of it lives in CUDA managed memory, which nvidia-smi "
                     f"counts but torch's allocator does not (peak {size(p.peak_bytes)} on the device against "
                     f"{size(p.peak_allocated_bytes)} torch max allocated), and under memory pressure the driver "
                     "moves those pages to CPU RAM instead of failing with out-of-memory: a slower step, not a "
                     "crash.")
        elif paged:
            text += " It is paged, but no tensor is large enough for its state to be put on pages."
        paras.append(text)
    out.append(("Optimizer state and paged optimizers", paras))

    # -- activations ---------------------------------------------------------------------------------
    paras = []
    for p in plans:
        r = p.scenario.recipe
        w = p.scenario.workload
        text = (f"{label(p.method)}: {size(p.components['activations'])} at the peak, which falls in "
                f"{p.peak_phase} ({p.peak_where}).")
        if r.grad_ckpt:
            text += (f" With gradient checkpointing each of the {model.num_layers} decoder layers keeps only its "
                     f"input ({size(p.detail['checkpoint_input_bytes_per_layer'])} per layer) and one layer at "
                     f"a time is recomputed ({size(p.detail['layer_activation_bytes'])}).")
        else:
            text += (f" Without gradient checkpointing all {model.num_layers} layers keep what autograd saves, "
                     f"{size(p.detail['layer_activation_bytes'])} per layer.")
        if p.method in ("lora", "qlora"):
            flipped = plan_scenario(p.scenario.with_(grad_ckpt=not r.grad_ckpt))
            text += (f" {'Without' if r.grad_ckpt else 'With'} it the peak would be {size(flipped.peak_bytes)} "
                     f"({'+' if flipped.peak_bytes >= p.peak_bytes else '−'}"
                     f"{size(abs(flipped.peak_bytes - p.peak_bytes))}).")
        paras.append(text)
    p = plans[0]
    w = p.scenario.workload
    paras.append(
        f"The loss works on {w.tokens:,} tokens × {model.vocab_size:,} vocabulary entries: the logits take "
        f"{size(p.detail['logits_bytes'])} and its backward needs {size(p.detail['loss_backward_bytes'])} "
        "(fp32 log-softmax, its gradient and the input gradient), which is why large vocabularies often put the "
        "peak at the loss. Activations grow linearly with sequence length and batch size."
    )
    out.append(("Activations and the loss", paras))

    # -- overhead ------------------------------------------------------------------------------------
    p = plans[-1] if "qlora" not in by else by["qlora"]
    d = p.detail
    out.append(("Overhead", [
        f"The CUDA context ({size(d['cuda_context_bytes'])}, an estimate until profiles calibrate it), cuBLAS "
        f"workspaces ({size(d['cublas_workspace_bytes'])}) and the caching allocator's slack at the peak "
        f"({size(d['allocator_slack_bytes'])} for {label(p.method)}, 5 % of the memory that churns during the "
        "step) are outside any tensor but inside what nvidia-smi shows."
    ]))
    return out

