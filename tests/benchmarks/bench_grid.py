"""Benchmark: the vectorized memory model over 100,000 scenarios (goal: under 1 s). Prints figures.

    python tests/benchmarks/bench_grid.py
"""

from __future__ import annotations

import time

import numpy as np

from vramplan.gpus import resolve_gpu
from vramplan.grid import plan_grid
from vramplan.models import load_model
from vramplan.spec import Recipe


def main() -> None:
    shape, gpu = load_model("8b"), resolve_gpu("rtx4090")
    seq = np.repeat(np.arange(256, 256 * 101, 256), 1000)  # 100 sequence lengths
    batch = np.tile(np.repeat(np.arange(1, 11), 100), 100)  # x 10 batch sizes
    rank = np.tile(np.array([4, 8, 16, 32, 64] * 20), 1000)  # x 5 ranks (each repeated)
    n = seq.size
    for method in ("lora", "qlora"):
        plan_grid(shape, Recipe.default(method), seq=seq[:10], batch=batch[:10], rank=rank[:10], gpu=gpu)
        t0 = time.perf_counter()
        cols = plan_grid(shape, Recipe.default(method), seq=seq, batch=batch, rank=rank, gpu=gpu)
        dt = time.perf_counter() - t0
        print(f"{method}: {n:,} scenarios in {dt * 1000:.0f} ms ({dt / n * 1e9:.0f} ns each); "
              f"{int(cols['fits'].sum()):,} fit an RTX 4090")


if __name__ == "__main__":
    main()
