"""The two places where running the real step on CPU fake tensors needs help, isolated and reversible.

Each patch is active only inside ``tracing_patches()`` and restores the original on exit. Each one changes a
decision the libraries make from *where* they run, never what they compute, and tests/test_trace.py checks
that a fake run and a real run give the same bytes with them in place.

1. ``transformers.masking_utils.find_packed_sequence_indices``: transformers treats FakeTensors as "tracing"
   (``utils.import_utils.is_tracing``) and then cannot take the data-dependent early exit for unpacked inputs,
   so it builds a packed-sequence mask and a materialized 4-D attention mask that a real run never builds. The
   tracer only feeds ordinary unpacked sequences (positions 0..S-1 in every row), for which the real function
   returns None, so inside the patch it returns None.
2. ``torch.is_autocast_enabled()`` with no argument asks about CUDA. peft's bitsandbytes LoRA layer uses it to
   decide whether to cast its input to the adapter dtype; when the tracer emulates ``Trainer(bf16=True)`` with
   CPU autocast, the patch answers for the CPU autocast state, as the real CUDA run would for CUDA.

3. Dropout: on CUDA, ``F.dropout`` takes the fused ``native_dropout`` kernel, which saves a 1-byte bool mask;
   on CPU, ATen takes a composite path that saves a mask in the input's dtype (4 bytes for fp32 LoRA inputs).
   ``use_native_dropout(model)`` makes the model's dropout modules call ``torch.native_dropout``, the kernel
   CUDA runs (same scaling, same saved tensors), so CPU traces count what a GPU holds.

bitsandbytes' double-quant table (``functional.name2qmap["dynamic"]``) is built lazily with ``.tolist()``,
which fake tensors cannot do: ``prime_bitsandbytes()`` builds it once with bitsandbytes' own function first.
"""

from __future__ import annotations

import contextlib


def prime_bitsandbytes() -> None:
    """Fill bitsandbytes' lazily built quantization map with its own function, before fake mode."""
    import bitsandbytes.functional as F

    if "dynamic" not in F.name2qmap:
        F.name2qmap["dynamic"] = F.create_dynamic_map()


@contextlib.contextmanager
def tracing_patches(*, emulate_cuda_autocast: bool):
    import torch
    import transformers.masking_utils as mu

    original_find = mu.find_packed_sequence_indices
    original_autocast = torch.is_autocast_enabled

    def find_packed_sequence_indices(position_ids):
        return None  # the tracer's inputs are never packed: what the real function answers for them

    def is_autocast_enabled(*args, **kwargs):
        if not args and not kwargs:
            return original_autocast("cpu")
        return original_autocast(*args, **kwargs)

    mu.find_packed_sequence_indices = find_packed_sequence_indices
    if emulate_cuda_autocast:
        torch.is_autocast_enabled = is_autocast_enabled
    try:
        yield
    finally:
        mu.find_packed_sequence_indices = original_find
        torch.is_autocast_enabled = original_autocast



def use_native_dropout(model) -> int:
    """Swap every active ``nn.Dropout`` of ``model`` for one that runs ``torch.native_dropout``, as CUDA does.

    A module swap, not a global patch, so gradient checkpointing's recompute runs the same kernel as the forward.
    Returns how many modules were swapped.
    """
    import torch

    class NativeDropout(torch.nn.Dropout):
        def forward(self, x):
            if self.training and 0.0 < self.p < 1.0 and x.numel() > 0:
                return torch.native_dropout(x, self.p, True)[0]
            return super().forward(x)

    swapped = 0
    for module in model.modules():
        if type(module) is torch.nn.Dropout and module.p > 0:
            module.__class__ = NativeDropout
            swapped += 1
    return swapped
