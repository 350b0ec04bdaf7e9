"""Benchmark: cold start of `vramplan plan 7b --gpu 24gb --json` and the warm time of one plan.

Goals (README): cold start well under 0.5 s; a warm plan under 1 ms. Prints figures, asserts nothing.

    python tests/benchmarks/bench_plan.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time


def cold_start(runs: int = 7) -> list[float]:
    cmd = [sys.executable, "-m", "vramplan", "plan", "7b", "--gpu", "24gb", "--json"]
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return times


def warm_plan(n: int = 2000) -> float:
    from vramplan.gpus import resolve_gpu
    from vramplan.models import load_model
    from vramplan.plan import plan_scenario
    from vramplan.spec import Recipe, Scenario, Workload

    shape, gpu = load_model("7b"), resolve_gpu("24gb")
    scenarios = [Scenario(shape, Recipe.default(m), Workload(seq=512 * (1 + k % 8)), gpu)
                 for k, m in zip(range(n), ["lora", "qlora"] * n)]
    plan_scenario(scenarios[0])
    t0 = time.perf_counter()
    for s in scenarios:
        plan_scenario(s)
    return (time.perf_counter() - t0) / n


def main() -> None:
    times = cold_start()
    print(f"cold start `python -m vramplan plan 7b --gpu 24gb --json`: median {statistics.median(times) * 1000:.0f} ms,"
          f" min {min(times) * 1000:.0f} ms over {len(times)} runs (goal: well under 500 ms)")
    per = warm_plan()
    print(f"warm plan_scenario(): {per * 1e6:.0f} µs per plan (goal: under 1 ms)")


if __name__ == "__main__":
    main()
