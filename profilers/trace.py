"""Run the real training step on fake tensors (or real ones, for tiny models) and record live tensor memory.

The step is the planner's step, run by the real libraries: a warm-up optimizer step creates the optimizer
state (steady state, as in every step after the first), then the traced step runs forward (the model call,
under autocast when the recipe says so, with ``labels`` so transformers computes the loss as Trainer does),
backward, ``optimizer.step()`` and ``zero_grad(set_to_none=True)``. The phase switches from forward to loss
when the output projection (lm_head) starts.

What a trace sees: every tensor the step's code allocates, at CUDA's 512-byte granularity. What it cannot see:
the CUDA context, cuBLAS workspaces, allocator caching and fragmentation, CUDA-only kernel buffers, and paging
(on CPU bitsandbytes keeps paged optimizer state as ordinary tensors, so it is counted in full). The planner's
``overhead`` component is therefore absent from a trace; compare tensor-level peaks.

Autocast: ``Trainer(bf16=True)`` autocasts on CUDA; the trace uses CPU autocast, whose lower-precision op list
covers the ops these models use (linear, matmul, bmm, baddbmm, addmm, scaled_dot_product_attention).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

from vramplan.errors import ScenarioError, VramplanError

from .recipe import build_skeleton, make_optimizer, materialize, quant_state_tensors, require, torch_dtype
from .tracker import COMPONENTS, make_tracker

TRACE_PHASES = ("load", "forward", "loss", "backward", "optimizer")


@dataclass
class TraceResult:
    """Live tensor memory of one traced step: per phase, the peak and its split into components."""

    scenario: object
    fake: bool
    phases: list
    subphases: list
    peak_bytes: int
    peak_phase: str
    peak_where: str
    components: dict
    trainable_params: int
    seconds: float
    ops: int
    loss: float | None = None
    notes: list = field(default_factory=list)

    def to_dict(self) -> dict:
        """The shape of one entry of ``vramplan plan --json``'s ``plans``, from measurement."""
        comps = {c: int(self.components.get(c, 0)) for c in COMPONENTS}
        comps["overhead"] = 0
        return {
            "method": self.scenario.recipe.method,
            "source": "trace (fake tensors)" if self.fake else "trace (real tensors, CPU)",
            "components": comps,
            "peak_bytes": None,
            "peak_reserved_bytes": None,
            "peak_allocated_bytes": None,
            "peak_tensor_bytes": int(self.peak_bytes),
            "peak_phase": self.peak_phase,
            "peak_where": self.peak_where,
            "trainable_params": int(self.trainable_params),
            "timeline": [
                {"phase": p.phase, "where": p.where, "tensor_bytes": int(p.peak_bytes),
                 "components": {c: int(p.components.get(c, 0)) for c in COMPONENTS}}
                for p in self.phases
            ],
            "seconds": round(self.seconds, 3),
            "ops": self.ops,
            "notes": list(self.notes),
        }


def trace_scenario(scenario, config_dict: dict, *, fake: bool = True, progress=None, seed: int = 0,
                   detailed: bool = False) -> TraceResult:
    """Trace one scenario (one method) built from ``config_dict``. ``progress(text)`` is told each stage.

    ``detailed`` keeps, at each phase's peak, the list of live storages (component, bytes, creating op).
    """
    import logging

    # torch logs a failing fake kernel before raising; the error reaches the user once, as one line
    fake_log = logging.getLogger("torch._subclasses.fake_tensor")
    drop = logging.Filter("nothing passes")  # a filter, because torch resets logger levels when it configures logs
    fake_log.addFilter(drop)
    try:
        return _trace_quiet(scenario, config_dict, fake=fake, progress=progress, seed=seed, detailed=detailed)
    finally:
        fake_log.removeFilter(drop)


def _trace_quiet(scenario, config_dict, *, fake, progress, seed, detailed) -> TraceResult:
    import warnings

    with warnings.catch_warnings():
        # the libraries warn about deprecations and CPU fallbacks (paged optimizers) that do not change bytes
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return _trace(scenario, config_dict, fake=fake, progress=progress, seed=seed, detailed=detailed)
        except (RuntimeError, ValueError, TypeError, NotImplementedError, AssertionError) as exc:
            if isinstance(exc, VramplanError):
                raise
            text = " ".join(str(exc).split())[:240]
            raise ScenarioError(
                f"the real step of this recipe failed in the libraries ({type(exc).__name__}: {text}); "
                f"this model/recipe cannot be traced as is: try --no-kbit-prep, other --targets, --adapter-dtype bf16 "
                f"or --attn eager"
            ) from None


def _trace(scenario, config_dict, *, fake, progress, seed, detailed) -> TraceResult:
    torch, _transformers, _peft = require("torch", "transformers", "peft")
    recipe, workload = scenario.recipe, scenario.workload
    if workload.gpus > 1:
        raise ScenarioError("trace runs one process; trace a multi-GPU plan with --gpus 1 (memory per GPU differs)")
    say = progress or (lambda _text: None)
    needs_bnb = recipe.quantized or recipe.optimizer not in ("adamw", "adamw_torch", "sgd")
    if needs_bnb:
        require("bitsandbytes")
        from .patches import prime_bitsandbytes

        prime_bitsandbytes()
    from torch._subclasses.fake_tensor import FakeTensorMode

    from .patches import tracing_patches, use_native_dropout

    t0 = time.perf_counter()
    say("building the model on the meta device")
    from vramplan.memory import effective_attn

    attn = effective_attn(scenario.model, recipe)
    if attn != recipe.attn:
        from dataclasses import replace

        recipe = replace(recipe, attn=attn)  # what transformers runs for this model (Gemma 2: eager), as planned
    model, config = build_skeleton(config_dict, recipe)
    use_native_dropout(model)  # dropout saves what CUDA's kernel saves (patches.py, item 3)
    fake_mode = FakeTensorMode(allow_non_fake_inputs=True) if fake else contextlib.nullcontext()
    Tracker = make_tracker()
    tracker = Tracker(detailed=detailed)
    with tracing_patches(emulate_cuda_autocast=recipe.autocast):
        say("making the tensors" + (" (fake)" if fake else ""))
        with fake_mode:
            built = materialize(model, config, recipe, fake=fake, seed=seed)
        optimizer = make_optimizer(built.adapters, recipe)  # bitsandbytes builds its maps outside fake mode
        n_train = sum(p.numel() for p in built.adapters)
        loss_value = None
        with fake_mode, tracker:
            hooks = track_built(tracker, built, optimizer)
            say("warm-up optimizer step (creates the optimizer state)")
            tracker.enter("warmup", component="optimizer")
            for p in built.adapters:
                p.grad = torch.zeros_like(p)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

            tracker.enter("load")
            head = model.get_output_embeddings()
            # the planner's loss phase starts at the output projection (logits, and its autocast weight copy)
            switch = head.register_forward_pre_hook(lambda *_: tracker.enter("loss") if tracker.phase == "forward"
                                                    else None)
            say(f"forward ({config.num_hidden_layers} layers, {workload.batch} x {workload.seq} tokens)")
            tracker.enter("forward")
            g = torch.Generator().manual_seed(seed)
            ids = torch.randint(0, config.vocab_size, (workload.batch, workload.seq), generator=g) if not fake \
                else torch.zeros((workload.batch, workload.seq), dtype=torch.long)
            labels = ids.clone()
            # a collator's attention_mask sits on the GPU for the whole step; with no padding transformers takes
            # the same causal path with or without it, so it is held but not passed (see patches.py, item 1)
            attention_mask = torch.ones_like(ids)
            autocast = (torch.autocast("cpu", dtype=torch_dtype(recipe.dtype)) if recipe.autocast
                        else contextlib.nullcontext())
            with autocast:
                loss = model(input_ids=ids, labels=labels, use_cache=False).loss
            switch.remove()
            say("backward")
            tracker.enter("backward")
            tracker.enter_sub("log_softmax backward")
            loss.backward()
            if not fake:
                loss_value = float(loss.detach())
            del loss
            say("optimizer step")
            tracker.enter("optimizer", component="optimizer")
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            del ids, labels, attention_mask  # the training loop's next batch replaces them
            tracker.enter("end")
            for h in hooks:
                h.remove()
    phases = [tracker.phases[p] for p in TRACE_PHASES if p in tracker.phases]
    top = max(phases, key=lambda p: p.peak_bytes)
    notes = []
    if recipe.optimizer.startswith("paged_"):
        notes.append("paged optimizer state is counted as ordinary tensors (no paging without CUDA)")
    return TraceResult(
        scenario=scenario, fake=fake, phases=phases, subphases=list(tracker.subphases.values()), peak_bytes=top.peak_bytes, peak_phase=top.phase,
        peak_where=top.where, components=dict(top.components), trainable_params=n_train,
        seconds=time.perf_counter() - t0, ops=tracker.ops, loss=loss_value, notes=notes,
    )


def track_built(tracker, built, optimizer) -> list:
    """Register what exists before the step and retag gradients as they arrive; returns the hooks to remove.

    Each parameter's gradient is counted as ``gradients`` when accumulated, and marks which stretch of the
    backward runs (the layer it belongs to). Shared by the tracer and the profiler's tracked step.
    """
    _register_static(tracker, built, optimizer)
    layer_of = _layer_labels(built.model, built.adapters, built.config.num_hidden_layers)

    def on_grad(p):
        tracker.register(p.grad, "gradients")
        label = layer_of.get(id(p))
        if label and tracker.phase == "backward" and tracker.sub != label:
            tracker.enter_sub(label)

    return [p.register_post_accumulate_grad_hook(on_grad) for p in built.adapters]


def _layer_labels(model, params, num_layers: int) -> dict:
    """id(param) -> which stretch of the backward its gradient marks (the planner's backward 'where' labels)."""
    import re

    wanted = {id(p) for p in params}
    labels = {}
    for name, p in model.named_parameters():
        if id(p) not in wanted:
            continue
        m = re.search(r"\.layers\.(\d+)\.", name)
        if m is None:
            continue
        k = int(m.group(1))
        labels[id(p)] = ("last decoder layer" if k == num_layers - 1 else "first decoder layer" if k == 0
                         else "decoder layers")
    return labels


def _register_static(tracker, built, optimizer) -> None:
    """Count what exists before the step: weights, quant constants, adapters, optimizer state and maps."""
    import torch

    adapters = {id(p) for p in built.adapters}
    model = built.model
    for p in model.parameters():
        tracker.register(p, "adapters" if id(p) in adapters and built.recipe.trains_adapters else "weights")
    for b in model.buffers():
        tracker.register(b, "weights")
    for state in built.quant_states:
        for t in quant_state_tensors(state):
            tracker.register(t, "quant_constants")
    for state in optimizer.state.values():
        for v in state.values():
            if torch.is_tensor(v):
                tracker.register(v, "optimizer")
    # bitsandbytes' two 8-bit maps reach the GPU only with the first state tensor of >= 4096 elements
    if any(p.numel() >= 4096 for p in built.adapters):
        for v in getattr(optimizer, "name2qmap", {}).values():
            if torch.is_tensor(v):
                tracker.register(v, "optimizer")
