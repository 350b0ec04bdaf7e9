"""Bytes in, text out: the only place that turns integer bytes into "12.3 GiB", and sizes typed by people into bytes.

Convention: 1 GiB = 1024**3 bytes. People type "24gb" for a card sold as "24 GB", and such a card holds
24 GiB, so every spelling of a size (``24gb``, ``24GB``, ``24GiB``, ``24g``) means binary units.
"""

from __future__ import annotations

import re

from .errors import ScenarioError

KiB = 1024
MiB = 1024**2
GiB = 1024**3
TiB = 1024**4

_UNITS = {"": GiB, "k": KiB, "m": MiB, "g": GiB, "t": TiB}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:([kmgt])(?:i?b)?)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int | None:
    """Parse "24gb", "80GiB", "24g", "1.5t", "512mb" to bytes (binary units); None if it is not a size."""
    m = _SIZE_RE.match(text)
    if not m:
        return None
    number, unit = m.group(1), (m.group(2) or "g").lower()  # a bare number is GiB: "--gpu 24"
    value = float(number) * _UNITS[unit]
    if value <= 0:
        raise ScenarioError(f"GPU memory size {text!r} must be positive; try --gpu 24gb")
    return int(round(value))


def gib(n_bytes: int) -> float:
    """Bytes as GiB (float), for display only."""
    return n_bytes / GiB


def fmt_gib(n_bytes: int, digits: int = 2) -> str:
    """Format bytes as "12.34 GiB" (binary: 1 GiB = 1024**3 B)."""
    return f"{n_bytes / GiB:.{digits}f} GiB"
