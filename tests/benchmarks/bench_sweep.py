"""Benchmark: a 100,000-scenario sweep from a scenario file to a DataFrame (goal: under 1 s). Prints figures.

    python tests/benchmarks/bench_sweep.py

The grid: 2 models x 2 methods x 50 sequence lengths x 10 batch sizes x 5 ranks x 10 GPUs = 100,000 rows,
planned in groups by model, method and Hopper flag with one vectorized call each; tokens/s included.
"""

from __future__ import annotations

import time

from vramplan.scenario_file import parse_scenario
from vramplan.sweep import count_groups, run_sweep

GRID = """
question: Benchmark grid of 100,000 scenarios
model: [7b, 8b]
method: [lora, qlora]
seq: {from: 512, to: 25600, step: 512}
batch: {from: 1, to: 10, step: 1}
rank: [8, 16, 32, 64, 128]
gpu: [rtx3090, rtx4090, rtx5090, l4, l40s, a100-40gb, a100-80gb, h100, h200, b200]
"""


def main() -> None:
    t0 = time.perf_counter()
    sf = parse_scenario(GRID)
    t_parse = time.perf_counter() - t0
    run_sweep(parse_scenario(GRID.replace("step: 512", "step: 12800")))  # warm imports and model caches
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        res = run_sweep(sf)
        best = min(best, time.perf_counter() - t0)
    df = res.df
    n = len(df)
    print(f"parse + validate: {t_parse * 1000:.0f} ms (models loaded, cold)")
    print(f"sweep: {n:,} scenarios x {len(df.columns)} columns in {best * 1000:.0f} ms "
          f"({best / n * 1e9:.0f} ns each; {count_groups(sf)} vectorized groups; best of 3)")
    print(f"{int(df['fits'].sum()):,} of {n:,} rows fit their GPU")


if __name__ == "__main__":
    main()
