"""The GPU catalogue (memory as NVML reports it, speed, price) and the parsing of ``--gpu``."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

from .errors import UnknownGpuError
from .spec import GpuSpec
from .units import GiB, parse_size


@lru_cache(maxsize=1)
def _raw_catalog() -> dict:
    return json.loads(resources.files("vramplan").joinpath("catalog", "gpus.json").read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def catalog() -> tuple[GpuSpec, ...]:
    """Every catalogue card, in file order (consumer, workstation, datacenter)."""
    out = []
    for e in _raw_catalog()["gpus"]:
        out.append(
            GpuSpec(
                id=e["id"],
                name=e["name"],
                memory_bytes=int(e["memory_bytes"]),
                compute_capability=e.get("compute_capability"),
                bf16_tflops=e.get("bf16_dense_tflops"),
                bandwidth_gbps=e.get("memory_bandwidth_gbps"),
                price_usd=e.get("price_usd"),
                rent_usd_per_hour=e.get("rent_usd_per_hour"),
                segment=e.get("segment"),
                aliases=tuple(e.get("aliases", ())),
            )
        )
    return tuple(out)


def catalog_about() -> str:
    """Where the figures come from and when (the catalogue's ``_about``)."""
    return _raw_catalog().get("_about", "")


def _norm(text: str) -> str:
    return text.strip().lower().replace("_", "-").replace(" ", "")


def resolve_gpu(text: str) -> GpuSpec:
    """A catalogue id or alias (``rtx4090``, ``a100-80gb``, ``h100``) or a bare size (``24gb`` = 24 GiB)."""
    key = _norm(text)
    if not key:
        raise UnknownGpuError("empty --gpu; use a size such as 24gb or a card such as rtx4090 (`vramplan gpus`)")
    for g in catalog():
        if key == g.id or key in (_norm(a) for a in g.aliases) or key == _norm(g.name):
            return g
    size = parse_size(text)
    if size is not None:
        if size < GiB // 4 or size > 64 * 1024 * GiB:
            raise UnknownGpuError(f"--gpu {text}: {size} bytes is not a GPU memory size; use e.g. --gpu 24gb")
        label = f"{size / GiB:g} GiB"
        return GpuSpec(id=key, name=label, memory_bytes=size)
    raise UnknownGpuError(
        f"unknown GPU {text!r}: use a size such as 24gb or 80GiB, or a card id such as rtx4090, a100-80gb, h100 "
        f"(`vramplan gpus` lists them)"
    )
