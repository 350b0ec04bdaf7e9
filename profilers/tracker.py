"""Which tensor storages are alive, how many bytes, and whose they are — on fake or real tensors.

``LiveTracker`` is a ``TorchDispatchMode``: every op's output storages are registered when first seen and
unregistered when Python frees them (a weak reference callback), so the running total is the memory a caching
allocator would have to hold for live tensors. Each storage is rounded up to 512 bytes, the CUDA caching
allocator's smallest block, so fake CPU tensors count like CUDA ones.

Each storage carries a component (the planner's names). What exists before the step is registered explicitly
(weights, quant constants, adapters, optimizer state); what the step creates is an activation unless it is
created inside the optimizer step (optimizer) or becomes a parameter's ``.grad`` (gradients: retagged by a
post-accumulate-grad hook). Totals per component are kept incrementally, so recording the peak of each phase
costs a dict copy, not a walk over the live set.

torch's own ``torch.distributed._tools.mem_tracker.MemTracker`` registers hooks on every parameter and fails on
frozen ones (LoRA models), hence this small tracker.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ROUND = 512
COMPONENTS = ("weights", "quant_constants", "adapters", "gradients", "optimizer", "activations")


def rounded(nbytes: int) -> int:
    return -(-nbytes // ROUND) * ROUND if nbytes else 0


class _Info:
    __slots__ = ("nbytes", "component", "op", "__weakref__")

    def __init__(self, nbytes, component, op=""):
        self.nbytes = nbytes
        self.component = component
        self.op = op


@dataclass
class PhasePeak:
    phase: str
    peak_bytes: int = 0
    components: dict = field(default_factory=dict)
    where: str = ""
    start_bytes: int = 0
    end_bytes: int = 0
    live: list = field(default_factory=list)  # (component, bytes, creating op) at the peak, when detailed


def make_tracker():
    """Build the tracker class lazily (torch is imported only when tracing)."""
    import weakref

    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.weak import WeakIdKeyDictionary

    class LiveTracker(TorchDispatchMode):
        def __init__(self, detailed: bool = False, local=None):
            super().__init__()
            self.local = local or (lambda t: t)  # the tensor holding the storage (a DTensor's local shard)
            self.detailed = detailed  # keep the list of live storages at each phase's peak (slow; for debugging)
            self.live = WeakIdKeyDictionary()
            self._refs = {}
            self.totals = dict.fromkeys(COMPONENTS, 0)
            self.current = 0
            self.component = "activations"
            self.phase = "setup"
            self.phases: dict[str, PhasePeak] = {}
            self.subphases: dict[str, PhasePeak] = {}  # "backward/last decoder layer" and so on
            self.sub = ""
            self.ops = 0

        # ---- registration --------------------------------------------------------------------------------
        def register(self, tensor, component: str) -> None:
            """Count an existing tensor's storage as ``component`` (retags it if already counted)."""
            if tensor is None or not isinstance(tensor, torch.Tensor):
                return
            st = self.local(tensor).untyped_storage()
            info = self.live.get(st)
            if info is None:
                self._add(st, component)
            elif info.component != component:
                self.totals[info.component] -= info.nbytes
                info.component = component
                self.totals[component] += info.nbytes

        def _add(self, st, component):
            nbytes = rounded(st.nbytes())
            info = _Info(nbytes, component)
            self.live[st] = info
            key = id(info)
            self._refs[key] = weakref.ref(st, lambda _r, k=key, i=info: self._free(k, i))
            self.totals[component] += nbytes
            self.current += nbytes
            self._peak_check()

        def _free(self, key, info):
            self._refs.pop(key, None)
            self.totals[info.component] -= info.nbytes
            self.current -= info.nbytes

        # ---- phases --------------------------------------------------------------------------------------
        def enter_sub(self, label: str) -> None:
            """Mark a stretch inside the current phase (e.g. which layer's backward runs)."""
            self.sub = label
            key = f"{self.phase}/{label}"
            if key not in self.subphases:
                self.subphases[key] = PhasePeak(key, start_bytes=self.current)
            sp = self.subphases[key]
            if self.current > sp.peak_bytes:
                sp.peak_bytes, sp.components, sp.where = self.current, dict(self.totals), "start"

        def enter(self, phase: str, component: str = "activations") -> None:
            self.sub = ""
            if self.phase in self.phases:
                self.phases[self.phase].end_bytes = self.current
            self.phase = phase
            self.component = component
            pp = self.phases.setdefault(phase, PhasePeak(phase, start_bytes=self.current))
            if self.current > pp.peak_bytes:
                pp.peak_bytes = self.current
                pp.components = dict(self.totals)
                pp.where = "start"

        def _peak_check(self, where: str = "") -> None:
            pp = self.phases.get(self.phase)
            if pp is not None and self.current > pp.peak_bytes:
                pp.peak_bytes = self.current
                pp.components = dict(self.totals)
                pp.where = where
                if self.detailed:
                    pp.live = [(i.component, i.nbytes, i.op) for i in list(self.live.values())]
            if self.sub:
                sp = self.subphases[f"{self.phase}/{self.sub}"]
                if self.current > sp.peak_bytes:
                    sp.peak_bytes, sp.components, sp.where = self.current, dict(self.totals), where
                    if self.detailed:
                        sp.live = [(i.component, i.nbytes, i.op) for i in list(self.live.values())]

        # ---- dispatch ------------------------------------------------------------------------------------
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            self.ops += 1
            new = False
            for t in _tensors(out):
                st = self.local(t).untyped_storage()
                info = self.live.get(st)
                if info is None:
                    nbytes = rounded(st.nbytes())
                    info = _Info(nbytes, self.component, func.__name__)
                    self.live[st] = info
                    key = id(info)
                    self._refs[key] = weakref.ref(st, lambda _r, k=key, i=info: self._free(k, i))
                    self.totals[self.component] += nbytes
                    self.current += nbytes
                    new = True
                else:
                    grown = rounded(st.nbytes())
                    if grown != info.nbytes:  # resize_ and friends
                        self.totals[info.component] += grown - info.nbytes
                        self.current += grown - info.nbytes
                        info.nbytes = grown
                        new = True
            if new:
                self._peak_check(func.__name__ if hasattr(func, "__name__") else str(func))
            return out

    def _tensors(out):
        if isinstance(out, torch.Tensor):
            yield out
        elif isinstance(out, (tuple, list)):
            for o in out:
                if isinstance(o, torch.Tensor):
                    yield o

    return LiveTracker
