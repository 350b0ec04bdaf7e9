"""Trace the full-size catalogue models and print the planner-vs-trace agreement table, time and peak RSS.

    python tests/benchmarks/bench_trace.py                 # the default list, LoRA and QLoRA, seq 2048
    python tests/benchmarks/bench_trace.py 70b --method qlora --seq 4096
    python tests/benchmarks/bench_trace.py --all           # every catalogue model (slow)

Each trace runs in a fresh process so its time and peak resident memory are its own (the figure the issue asks
for: `vramplan trace 70b --method qlora --seq 4096` in under 60 s with modest RAM). Figures are printed, not
asserted.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

DEFAULT = ["qwen2.5-0.5b", "llama-3.2-1b", "phi-3-mini-4k", "mistral-7b-v0.3", "qwen2.5-7b", "llama-3.1-8b",
           "gemma-2-9b", "llama-3.1-70b"]

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from dataclasses import replace
from vramplan.models import load_config, load_model
from vramplan.plan import plan_scenario
from vramplan.spec import Recipe, Scenario, Workload
from profilers.trace import trace_scenario
name, method, seq, batch, gc = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
shape = load_model(name)
recipe = replace(Recipe.default(method), grad_ckpt=gc)
if shape.is_moe:
    recipe = replace(recipe, dropout=0.0)
s = Scenario(shape, recipe, Workload(seq, batch))
b = plan_scenario(s)
t = trace_scenario(s, load_config(name))
print(json.dumps({"planned": b.peak_tensor_bytes, "traced": t.peak_bytes, "plan_phase": b.peak_where,
                  "trace_phase": t.peak_phase, "trace_s": t.seconds, "total_s": time.perf_counter() - t0,
                  "rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def run(name, method, seq, batch, gc):
    out = subprocess.run([sys.executable, "-c", CHILD, name, method, str(seq), str(batch), "1" if gc else "0"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="*")
    ap.add_argument("--all", action="store_true")
    ap.add_argument("--method", choices=["lora", "qlora", "both"], default="both")
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--no-grad-ckpt", action="store_true")
    a = ap.parse_args()
    if a.all:
        from vramplan.models import catalog_names

        models = catalog_names()
    else:
        models = a.models or DEFAULT
    methods = ("lora", "qlora") if a.method == "both" else (a.method,)
    print(f"seq {a.seq} x batch {a.batch}, gradient checkpointing {'off' if a.no_grad_ckpt else 'on'}; "
          f"tensor-level peaks in GiB; time and peak RSS of a fresh process")
    print(f"{'model':16s} {'method':6s} {'planned':>8s} {'traced':>8s} {'diff':>7s}  {'trace s':>7s} "
          f"{'total s':>7s} {'RSS GiB':>7s}  peak (plan / trace)")
    worst = 0.0
    for name in models:
        for method in methods:
            r = run(name, method, a.seq, a.batch, not a.no_grad_ckpt)
            if "error" in r:
                print(f"{name:16s} {method:6s} error: {r['error']}")
                continue
            err = 100 * (r["planned"] - r["traced"]) / r["traced"]
            worst = max(worst, abs(err))
            print(f"{name:16s} {method:6s} {r['planned'] / 2**30:8.2f} {r['traced'] / 2**30:8.2f} {err:+6.2f}%  "
                  f"{r['trace_s']:7.1f} {r['total_s']:7.1f} {r['rss_kb'] / 2**20:7.2f}  "
                  f"{r['plan_phase']} / {r['trace_phase']}", flush=True)
    print(f"worst |diff| {worst:.2f} %")


if __name__ == "__main__":
    main()
