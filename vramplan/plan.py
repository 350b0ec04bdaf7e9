"""The step as phases, the peak, and the Breakdown every output format is built from.

A training step (steady state: optimizer state exists, gradients were set to None by the last zero_grad)
goes through: **load** (what sits on the GPU between steps), **forward**, **loss**, **backward** (the loss
backward, then the decoder layers from the last to the first) and **optimizer** step. Each phase is a set of
components; the peak is the phase with the largest device-level total. Numeric workload knobs may be numpy
arrays: the phase choice is made element-wise, so one call plans a whole grid (see ``vramplan.sweep``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import memory as m
from .spec import OPTIMIZERS, Recipe, Scenario

COMPONENTS = ("weights", "quant_constants", "adapters", "gradients", "optimizer", "activations", "overhead")
PHASES = ("load", "forward", "loss", "backward", "optimizer")
# How every output (table, screen, report) names the components for people.
COMPONENT_LABELS = {
    "weights": "base weights",
    "quant_constants": "quant constants",
    "adapters": "LoRA adapters",
    "gradients": "gradients",
    "optimizer": "optimizer state",
    "activations": "activations + loss",
    "overhead": "overhead (CUDA, slack)",
}


@dataclass(frozen=True)
class Phase:
    """Memory at one point of the step: components (device level) and the three torch/NVML views."""

    name: str
    components: dict
    allocated_bytes: int
    reserved_bytes: int
    device_bytes: int
    tensor_bytes: int
    where: str = ""

    def to_dict(self) -> dict:
        return {
            "phase": self.name,
            "where": self.where,
            "components": {k: int(v) for k, v in self.components.items()},
            "device_bytes": int(self.device_bytes),
            "reserved_bytes": int(self.reserved_bytes),
            "allocated_bytes": int(self.allocated_bytes),
            "tensor_bytes": int(self.tensor_bytes),
        }


@dataclass(frozen=True)
class Breakdown:
    """The predicted memory of one scenario: components at the peak (summing to ``peak_bytes``) and detail.

    Example usage::

        b = plan_scenario(Scenario(load_model("8b"), Recipe.default("qlora")))
        b.peak_bytes, b.peak_phase, b.components["activations"]

    Known Limitations: see "What is not modelled" in the README (fragmentation is an estimate, MoE routing
    buffers are approximate, padding masks and packed sequences are not modelled).
    """

    scenario: Scenario
    components: dict
    peak_bytes: int
    peak_reserved_bytes: int
    peak_allocated_bytes: int
    peak_tensor_bytes: int
    peak_phase: str
    peak_where: str
    phases: tuple
    detail: dict
    trainable_params: int
    notes: tuple = field(default=())

    @property
    def method(self) -> str:
        return self.scenario.recipe.method

    @property
    def fits(self) -> bool | None:
        gpu = self.scenario.gpu
        return None if gpu is None else bool(self.peak_bytes <= gpu.memory_bytes)

    @property
    def headroom_bytes(self) -> int | None:
        gpu = self.scenario.gpu
        return None if gpu is None else int(gpu.memory_bytes - self.peak_bytes)

    def to_dict(self) -> dict:
        """The plan-entry JSON object of the CLI contract."""
        r = self.scenario.recipe
        return {
            "method": r.method,
            "recipe": recipe_dict(r),
            "components": {k: int(self.components[k]) for k in COMPONENTS},
            "peak_bytes": int(self.peak_bytes),
            "peak_reserved_bytes": int(self.peak_reserved_bytes),
            "peak_allocated_bytes": int(self.peak_allocated_bytes),
            "peak_tensor_bytes": int(self.peak_tensor_bytes),
            "peak_phase": self.peak_phase,
            "peak_where": self.peak_where,
            "fits": self.fits,
            "headroom_bytes": self.headroom_bytes,
            "trainable_params": int(self.trainable_params),
            "timeline": [p.to_dict() for p in self.phases],
            "detail": {k: (int(v) if not isinstance(v, str) else v) for k, v in self.detail.items()},
            "notes": list(self.notes),
        }


def recipe_dict(r: Recipe) -> dict:
    """Every knob of a recipe, JSON-ready."""
    return {
        "method": r.method,
        "dtype": r.dtype,
        "quant": r.quant if r.quantized else None,
        "double_quant": r.double_quant if r.quantized else None,
        "blocksize": r.blocksize if r.quantized else None,
        "kbit_prep": r.kbit_prep if r.quantized else False,
        "rank": r.rank if r.trains_adapters else None,
        "alpha": r.alpha if r.trains_adapters else None,
        "dropout": r.dropout if r.trains_adapters else None,
        "targets": ",".join(r.targets) if r.trains_adapters else None,
        "adapter_dtype": r.adapter_dtype if r.trains_adapters else None,
        "optimizer": r.optimizer,
        "grad_ckpt": r.grad_ckpt,
        "attn": r.attn,
        "autocast": r.autocast,
    }


def _pick(states: list[dict]) -> dict:
    """The state with the largest device total; element-wise when totals are numpy arrays."""
    totals = [s["device"] for s in states]
    if not any(hasattr(t, "shape") for t in totals):
        best = 0
        for k in range(1, len(states)):
            if totals[k] > totals[best]:
                best = k
        return states[best]
    import numpy as np

    idx = np.argmax(np.stack(np.broadcast_arrays(*totals)), axis=0)
    out = {}
    for key in states[0]:
        vals = [s[key] for s in states]
        if isinstance(vals[0], str) or getattr(vals[0], "dtype", None) == object:
            stacked = np.stack([np.broadcast_to(np.asarray(v, dtype=object), idx.shape) for v in vals])
            out[key] = np.take_along_axis(stacked, idx[None, ...], axis=0)[0]
        else:
            stacked = np.stack([np.broadcast_to(np.asarray(v), idx.shape) for v in vals])
            out[key] = np.take_along_axis(stacked, idx[None, ...], axis=0)[0]
    return out


def _max(values):
    """max() of ints, or the element-wise maximum when some are numpy arrays."""
    values = list(values)
    if not any(hasattr(v, "shape") for v in values):
        return max(values)
    import numpy as np

    return np.maximum.reduce(np.broadcast_arrays(*values))


def evaluate(model, r: Recipe, *, seq, batch, rank, gpus: int = 1, shard: str = "none", hopper: bool = False,
             offload: bool = False):
    """The five phase states and the peak state of a step. ``seq``, ``batch`` and ``rank`` may be ints or
    numpy integer arrays (broadcast together); the recipe's other knobs and the GPU count are scalars.
    ``offload`` is FSDP's CPU offload of parameters, gradients and optimizer (with ``shard="fsdp"``).

    Returns ``(states, peak, detail)``: dicts of component bytes plus "allocated", "reserved", "device",
    "tensor", "slack", "phase" and "where".
    """
    T, S, L = seq * batch, seq, model.num_layers
    n_gpus = gpus

    weights = m.base_weight_bytes(model, r)
    qconst = m.quant_constant_bytes(model, r)
    adapters = m.lora_adapter_bytes(model, r, rank)
    grads = m.gradient_bytes(model, r, rank)
    layer_grads = m.layer_gradient_bytes(model, r, rank)
    opt_alloc, opt_paged = m.optimizer_state_bytes(model, r, rank)
    opt_step = m.optimizer_step_transient_bytes(model, r, rank)
    n_train = m.trainable_params(model, r, rank)

    # --- multi-GPU: per-GPU figures ------------------------------------------------------------------
    # FSDP full shard: every parameter (packed 4-bit storage included: bnb_4bit_quant_storage makes it a
    # float tensor FSDP can flatten), adapter, gradient and optimizer state is split n ways; the 4-bit
    # quantization constants are not parameters and stay whole on every GPU (bitsandbytes PR #970,
    # AnswerDotAI/fsdp_qlora PR #4: quant_state is attached to every rank's Linear4bit). During forward and
    # backward: the root unit, the unit in use and the prefetched one, gathered; one unit's unsharded
    # gradient and its shard around the reduce-scatter. Between steps and in optimizer.step() nothing is
    # gathered. With CPU offload the shards, their gradients and the optimizer live on the CPU (the
    # optimizer step runs there): the GPU holds the gathered units, the reduce-scatter buffers and the
    # quantization constants. DDP: each GPU holds the whole job plus the gradient buckets, allocated once
    # and alive for the whole step.
    ddp_buckets = 0
    fsdp_gather = 0
    gather_buffer = 0
    step_grads = grads  # gradients on the GPU at optimizer.step()
    multi_detail = {"ddp_bucket_count": 0, "fsdp_reduce_scatter_bytes": 0}
    if shard == "fsdp" and (n_gpus > 1 or offload):
        fsdp_gather = m.fsdp_gathered_bytes(model, r, adapters)
        gather_buffer = m.fsdp_gather_buffer_bytes(model, r)
        rs = m.fsdp_reduce_scatter_bytes(layer_grads, n_gpus)
        multi_detail["fsdp_reduce_scatter_bytes"] = rs
        layer_grads = rs
        if offload:
            weights = m.buffer_bytes(model, r)
            adapters = 0
            step_grads = 0
            grads = rs
            opt_alloc = opt_paged = opt_step = 0
        else:
            weights = m.fsdp_param_share_bytes(model, r, n_gpus)
            adapters = m.cdiv(adapters, n_gpus)
            step_grads = m.cdiv(grads, n_gpus)
            grads = step_grads + rs
            opt_alloc, opt_paged = m.cdiv(opt_alloc, n_gpus), m.cdiv(opt_paged, n_gpus)
            opt_step = m.cdiv(opt_step, n_gpus)
    elif n_gpus > 1 and shard == "ddp":
        ddp_buckets = m.ddp_bucket_bytes(grads)
        multi_detail["ddp_bucket_count"] = m.ddp_bucket_count(grads)

    # --- activations ----------------------------------------------------------------------------------
    per_layer = m.layer_activation_bytes(model, r, T, S, rank)
    gc_in = m.checkpoint_input_bytes(model, r, T)
    base_act = m.batch_tensor_bytes(model, T) + m.rope_bytes(model, r, T)
    mask = m.sliding_mask_shared_bytes(model, r, T, S)  # built once per forward, alive until backward ends
    fnorm = m.final_norm_bytes(model, T)
    head_copy = m.head_weight_copy_bytes(model, r)
    loss = m.loss_bytes(model, r, T)
    ws = m.working_set_bytes(model, r, T)
    dq = m.dequant_buffer_bytes(model, r)
    # the backward of one layer peaks in its MLP: after the down projection's saved inputs are freed, either
    # three i-wide gradients at once, or (4-bit) one plus the dequantized weight of MatMul4Bit's backward
    bwd_moment = _max([ws["backward"], ws["backward_dequant"] + dq["backward"]]) - ws["down_saved"]
    if r.grad_ckpt:
        # the checkpointed forward saves nothing; its recompute in backward re-creates one layer's tensors
        held_layers = L * gc_in
        # the checkpointed forward saves nothing: its peak is a layer's largest moment (and merged experts)
        attn_moment = T * (m.layer_activation_items(model, r, S, rank)["attention"] + 2 * model.hidden_size
                           * m.stream_bytes(r))  # eager attention's scores and softmax, alive at once
        fwd_layers = L * gc_in + _max([ws["forward"], ws["forward_product"], attn_moment]) + ws["merged_experts"]
        recompute = per_layer + ws["forward"] + ws["recompute_extra"]
        if r.upcast:
            # with an fp32 stream the first norm saves the layer's input itself: the checkpoint input, not a copy
            recompute = recompute - gc_in
        recomputed = per_layer - (gc_in if r.upcast else 0)
        top_layers = L * gc_in + _max([recompute, recomputed + bwd_moment])
        bottom_layers = gc_in + _max([recompute, recomputed + bwd_moment])
    else:
        # without checkpointing nothing makes the embedding output require grad (peft's kbit prep only calls
        # enable_input_require_grads for checkpointing), so the first layer's first norm saves nothing. With an
        # fp32 stream its input is the embedding output itself, alive anyway as the residual: a smaller saving.
        first_layer_adj = 0
        if r.method != "full":
            first_layer_adj = T * (3 * model.hidden_size if r.upcast else 4 * model.hidden_size
                                   + m.RMSNORM_SAVED_SCALAR)
        held_layers = L * per_layer - first_layer_adj
        fwd_layers = held_layers + ws["forward"]
        top_layers = held_layers + bwd_moment
        bottom_layers = per_layer + bwd_moment
    held_mask = 0  # measured: the recompute does not keep the shared mask alive through backward
    fwd_end = base_act + held_layers + fnorm + head_copy + held_mask

    context = m.cuda_context_bytes()
    cublas = m.cublas_workspace_bytes(hopper)

    def state(phase, where, act, g, step=0, kernel=0, opt_extra=0, extra_gather=0):
        churn = act + g + step + kernel
        slack = m.allocator_slack_bytes(churn)
        # FSDP gathers units only in forward and backward; DDP's buckets persist between steps too
        gather = fsdp_gather if phase in ("forward", "loss", "backward") else 0
        gather = gather + extra_gather
        if phase == "load":
            g = g + ddp_buckets
        allocated = weights + qconst + adapters + g + opt_alloc + step + act + cublas + kernel + gather
        reserved = allocated + slack
        device = reserved + context + opt_paged
        return {
            "phase": phase,
            "where": where,
            "weights": weights + gather,
            "quant_constants": qconst,
            "adapters": adapters,
            "gradients": g,
            "optimizer": opt_alloc + opt_paged + step,
            "activations": act,
            "overhead": context + cublas + slack + kernel,
            "allocated": allocated,
            "reserved": reserved,
            "device": device,
            "tensor": weights + gather + qconst + adapters + g + opt_alloc + opt_paged + step + act,
            "slack": slack,
        }

    load = state("load", "between steps", 0, 0)
    fwd_states = [
        state("forward", "last decoder layer", base_act + mask + fwd_layers, 0, kernel=dq["forward"]),
        # FSDP2 at the first gather: the root unit's all-gather buffer beside its unsharded copy
        state("forward", "root all-gather", base_act, 0, extra_gather=gather_buffer),
    ]
    fwd = _pick(fwd_states)
    loss_fwd = state("loss", "cross-entropy forward", fwd_end + loss["forward"], 0)
    bwd_states = [
        state("backward", "log_softmax backward", fwd_end + loss["backward"], 0),
        state("backward", "last decoder layer", base_act + held_mask + top_layers,
              layer_grads + ddp_buckets),
        state("backward", "first decoder layer", base_act + held_mask + bottom_layers,
              grads + ddp_buckets),
    ]
    bwd = _pick(bwd_states)
    opt = state("optimizer", "optimizer.step()", base_act, step_grads + ddp_buckets, step=opt_step)
    states = [load, fwd, loss_fwd, bwd, opt]
    peak = _pick(states)
    # torch's max_memory_allocated/reserved are maxima over the whole step, not values at the NVML peak: with
    # paged state the device peak can fall in a phase where the allocator holds less than elsewhere.
    every = [load, *fwd_states, loss_fwd, *bwd_states, opt]
    peak = dict(peak, max_allocated=_max(s["allocated"] for s in every), max_reserved=_max(s["reserved"] for s in every),
                max_tensor=_max(s["tensor"] for s in every))
    detail = {
        "trainable_params": n_train,
        "lora_param_bytes": adapters,
        "paged_optimizer_bytes": opt_paged,
        "optimizer_step_transient_bytes": opt_step,
        "layer_activation_bytes": per_layer,
        "checkpoint_input_bytes_per_layer": gc_in if r.grad_ckpt else 0,
        "logits_bytes": T * model.vocab_size * m.logits_bytes_per_element(r),
        "loss_forward_bytes": loss["forward"],
        "loss_backward_bytes": loss["backward"],
        "lm_head_autocast_copy_bytes": head_copy,
        "dequant_forward_bytes": dq["forward"],
        "dequant_backward_bytes": dq["backward"],
        "backward_working_set_bytes": ws["backward"],
        "cuda_context_bytes": context,
        "cublas_workspace_bytes": cublas,
        "allocator_slack_bytes": peak["slack"],
        "kbit_prep_upcast_bytes": _upcast_bytes(model, r),
        "ddp_bucket_bytes": ddp_buckets,
        "fsdp_gathered_bytes": fsdp_gather,
        "fsdp_gather_buffer_bytes": gather_buffer,
        **multi_detail,
        "attention": m.effective_attn(model, r),
    }
    return states, peak, detail


def plan_scenario(s: Scenario) -> Breakdown:
    """Predict the memory of one scenario (one method). Pure: no I/O, no torch."""
    model, r, w = s.model, s.recipe, s.workload
    r.validate()
    w.validate()
    m.check_recipe(model, r)
    states, peak, detail = evaluate(model, r, seq=w.seq, batch=w.batch, rank=r.rank, gpus=w.gpus, shard=w.shard,
                                    hopper=bool(s.gpu and s.gpu.is_hopper_or_newer), offload=w.offload)

    phases = tuple(
        Phase(st["phase"], {k: st[k] for k in COMPONENTS}, st["allocated"], st["reserved"], st["device"],
              st["tensor"], st["where"])
        for st in states
    )
    return Breakdown(
        scenario=s,
        components={k: peak[k] for k in COMPONENTS},
        peak_bytes=peak["device"],
        peak_reserved_bytes=peak["max_reserved"],
        peak_allocated_bytes=peak["max_allocated"],
        peak_tensor_bytes=peak["max_tensor"],
        peak_phase=peak["phase"],
        peak_where=peak["where"],
        phases=phases,
        detail=detail,
        trainable_params=detail["trainable_params"],
        notes=tuple(_notes(s, detail["paged_optimizer_bytes"])),
    )


def _upcast_bytes(model, r: Recipe) -> int:
    """What prepare_model_for_kbit_training's fp32 upcast adds over keeping the 16-bit copies."""
    if not r.upcast:
        return 0
    from dataclasses import replace

    return m.base_weight_bytes(model, r) - m.base_weight_bytes(model, replace(r, kbit_prep=False))


def _notes(s: Scenario, opt_paged) -> list[str]:
    model, r = s.model, s.recipe
    notes = []
    if m.effective_attn(model, r) != r.attn:
        notes.append(f"{model.model_type} has no SDPA path in transformers 5.23; eager attention is modelled")
    if model.is_moe:
        notes.append("MoE experts are fused 3-D parameters in transformers 5.23: 4-bit loading leaves them in "
                     f"{r.dtype}; expert routing activations are approximate")
    if OPTIMIZERS[r.optimizer][2] and int(opt_paged) > 0:
        notes.append("paged optimizer state lives in CUDA managed memory: counted in peak_bytes (NVML), not in "
                     "torch's allocated/reserved; it can be evicted to CPU RAM under pressure")
    return notes
