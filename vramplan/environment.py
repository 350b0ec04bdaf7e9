"""`vramplan env`: the versions that matter for memory, read without importing heavy libraries when possible."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment() -> dict[str, str]:
    """Python, platform, library versions, and (when torch and a GPU are there) CUDA, device and driver."""
    env = {
        "vramplan": _version("vramplan"),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    for dist in ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "nvidia-ml-py"):
        env[dist] = _version(dist)
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10,
        )
        env["gpus (nvidia-smi)"] = "; ".join(out.stdout.strip().splitlines()) or "none"
    except (OSError, subprocess.TimeoutExpired):
        env["gpus (nvidia-smi)"] = "nvidia-smi not found"
    if env["torch"] != "not installed":
        import torch

        env["torch cuda"] = str(torch.version.cuda)
        env["cuda available"] = str(torch.cuda.is_available())
    return env
