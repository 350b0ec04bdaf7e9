"""Benchmark: one solver call (max_fit for seq / batch / rank, min_gpus, smallest_gpu) and `vramplan gpus 70b`
end to end. Goal: interactive, one solver call well under a second. Prints figures, asserts nothing.

    python tests/benchmarks/bench_solve.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time


def timed(fn, runs: int = 20) -> tuple[float, object]:
    fn()  # warm: catalogue and model caches
    times = []
    out = None
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    from vramplan.advise import advise
    from vramplan.gpus import resolve_gpu
    from vramplan.models import load_model
    from vramplan.solve import max_fit, min_gpus, smallest_gpu
    from vramplan.spec import Recipe, Scenario, Workload

    cases = [("0.5b", "lora", "rtx3060"), ("8b", "qlora", "rtx4090"), ("9b", "qlora", "l4"),
             ("70b", "qlora", "h100")]
    for name, method, gpu in cases:
        s = Scenario(load_model(name), Recipe.default(method), Workload(), resolve_gpu(gpu))
        for knob in ("seq", "batch", "rank"):
            t, v = timed(lambda: max_fit(s, knob))
            print(f"max_fit {name:>4} {method:<5} {gpu:<8} {knob:<5} = {v:>9,}   {t * 1000:6.2f} ms")
    s70 = Scenario(load_model("70b"), Recipe.default("lora"), Workload(), resolve_gpu("a100-40gb"))
    t, n = timed(lambda: min_gpus(s70))
    print(f"min_gpus 70b lora a100-40gb (fsdp) = {n}   {t * 1000:.2f} ms")
    s8 = Scenario(load_model("8b"), Recipe.default("qlora"), Workload(seq=8192))
    t, g = timed(lambda: smallest_gpu(s8))
    print(f"smallest_gpu 8b qlora seq 8192 = {g.id}   {t * 1000:.2f} ms")
    both = [Scenario(load_model("70b"), Recipe.default(m), Workload()) for m in ("lora", "qlora")]
    t, rows = timed(lambda: advise(both), runs=5)
    print(f"advise(70b, lora+qlora, {len(rows)} options) in process: {t * 1000:.0f} ms")
    cmd = [sys.executable, "-m", "vramplan", "gpus", "70b"]
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    print(f"`python -m vramplan gpus 70b` end to end: median {statistics.median(times) * 1000:.0f} ms, "
          f"min {min(times) * 1000:.0f} ms over {len(times)} runs (goal: interactive)")


if __name__ == "__main__":
    main()
