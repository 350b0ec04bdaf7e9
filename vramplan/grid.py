"""The memory model over numpy arrays of scenarios: one call plans a whole grid of seq x batch x rank.

Same code as ``plan_scenario`` (``plan.evaluate``), evaluated element-wise; categorical knobs (method,
optimizer, checkpointing, ...) are fixed per call, so a sweep groups its grid by them.
"""

from __future__ import annotations

from dataclasses import replace

from .memory import check_recipe, trainable_params
from .plan import COMPONENTS, evaluate
from .spec import GpuSpec, ModelShape, Recipe, Workload


def plan_grid(model: ModelShape, recipe: Recipe, *, seq, batch, rank=None, gpus: int = 1, shard: str = "none",
              gpu: GpuSpec | None = None) -> dict:
    """Columns (numpy arrays, integer bytes) for every (seq, batch, rank) triple, broadcast together.

    Example::

        cols = plan_grid(load_model("8b"), Recipe.default("qlora"), seq=np.arange(512, 32769, 512), batch=1)
        cols["peak_bytes"]

    Columns: seq, batch, rank, tokens, the seven components, peak_bytes, peak_reserved_bytes,
    peak_allocated_bytes, peak_tensor_bytes, peak_phase, peak_where, trainable_params, and with a GPU fits and
    headroom_bytes.
    """
    import numpy as np

    seq = np.asarray(seq, dtype=np.int64)
    batch = np.asarray(batch, dtype=np.int64)
    rank = np.asarray(recipe.rank if rank is None else rank, dtype=np.int64)
    seq, batch, rank = np.broadcast_arrays(seq, batch, rank)
    # the scalar validators, applied to the extremes of each axis
    for s_, b_ in ((int(seq.min()), int(batch.min())), (int(seq.max()), int(batch.max()))):
        Workload(seq=s_, batch=b_, gpus=gpus, shard=shard).validate()
    replace(recipe, rank=int(rank.min())).validate()
    replace(recipe, rank=int(rank.max())).validate()
    check_recipe(model, recipe)
    states, peak, detail = evaluate(model, recipe, seq=seq, batch=batch, rank=rank, gpus=gpus, shard=shard,
                                    hopper=bool(gpu and gpu.is_hopper_or_newer))
    cols = {"seq": seq, "batch": batch, "rank": rank, "tokens": seq * batch}
    for c in COMPONENTS:
        cols[c] = np.broadcast_to(np.asarray(peak[c], dtype=np.int64), seq.shape)
    cols["peak_bytes"] = np.broadcast_to(np.asarray(peak["device"], dtype=np.int64), seq.shape)
    cols["peak_reserved_bytes"] = np.broadcast_to(np.asarray(peak["max_reserved"], dtype=np.int64), seq.shape)
    cols["peak_allocated_bytes"] = np.broadcast_to(np.asarray(peak["max_allocated"], dtype=np.int64), seq.shape)
    cols["peak_tensor_bytes"] = np.broadcast_to(np.asarray(peak["max_tensor"], dtype=np.int64), seq.shape)
    cols["peak_phase"] = np.broadcast_to(np.asarray(peak["phase"], dtype=object), seq.shape)
    cols["peak_where"] = np.broadcast_to(np.asarray(peak["where"], dtype=object), seq.shape)
    cols["trainable_params"] = np.broadcast_to(np.asarray(trainable_params(model, recipe, rank), dtype=np.int64),
                                               seq.shape)
    if gpu is not None:
        cols["fits"] = cols["peak_bytes"] <= gpu.memory_bytes
        cols["headroom_bytes"] = gpu.memory_bytes - cols["peak_bytes"]
    return cols
