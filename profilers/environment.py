"""Provenance of a measured row: where it ran and with which library versions."""

from __future__ import annotations

import datetime
from importlib import metadata


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return ""


def library_versions() -> dict:
    return {d: _version(d) for d in ("torch", "transformers", "peft", "bitsandbytes")}


def trace_env(*, fake: bool) -> dict:
    """Provenance of a trace row: no GPU; tensor-level bytes at CUDA's 512-byte granularity."""
    return {
        "source": "trace",
        "device": "cpu (fake tensors)" if fake else "cpu (real tensors)",
        "gpu_memory_bytes": None,
        "driver": "",
        "cuda": "",
        **library_versions(),
        "date": datetime.date.today().isoformat(),
    }
