"""Predicted (planner) against traced memory, component by component and phase by phase.

The trace sees tensors only, so the comparison is at tensor level: the planner's components minus its
``overhead`` (CUDA context, cuBLAS workspaces, allocator slack, kernel-internal buffers) against what the
tracker counted. Pure Python: works on the planner's Breakdown and the trace's TraceResult.
"""

from __future__ import annotations

TENSOR_COMPONENTS = ("weights", "quant_constants", "adapters", "gradients", "optimizer", "activations")


def _row(name, predicted, traced):
    diff = int(predicted) - int(traced)
    pct = 100.0 * diff / traced if traced else (0.0 if diff == 0 else float("inf"))
    return {"item": name, "predicted_bytes": int(predicted), "traced_bytes": int(traced), "diff_bytes": diff,
            "diff_pct": round(pct, 3)}


def compare(breakdown, trace) -> dict:
    """Rows of the comparison: the tensor-level peak, each component at the peak, and each phase's peak."""
    comps = [_row(c, breakdown.components[c], trace.components.get(c, 0)) for c in TENSOR_COMPONENTS]
    peak = _row("tensor peak", breakdown.peak_tensor_bytes, trace.peak_bytes)
    traced_phases = {p.phase: p for p in trace.phases}
    phases = []
    for p in breakdown.phases:
        t = traced_phases.get(p.name)
        if t is not None:
            phases.append(dict(_row(p.name, p.tensor_bytes, t.peak_bytes), predicted_where=p.where,
                               traced_where=t.where))
    return {
        "method": breakdown.method,
        "peak": dict(peak, predicted_phase=breakdown.peak_phase, traced_phase=trace.peak_phase),
        "components": comps,
        "phases": phases,
        "not_comparable": {"overhead_bytes": int(breakdown.components["overhead"]),
                           "why": "CUDA context, cuBLAS workspaces, allocator slack and kernel buffers are not tensors"},
    }
