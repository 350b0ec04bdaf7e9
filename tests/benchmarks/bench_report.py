"""Benchmark: building and writing the HTML reports. Prints figures (time per stage, page size).

    python tests/benchmarks/bench_report.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vramplan.cli import _build
from vramplan.report.build import accuracy_report, model_report
from vramplan.report.page import plotly_js, write_html

KW = dict(method="both", seq=2048, batch=1, rank=16, alpha=32.0, dropout=0.05, targets="all-linear",
          adapter_dtype="fp32", dtype="bf16", quant="nf4", double_quant=True, blocksize=64, kbit_prep=True,
          optimizer=None, grad_ckpt=True, attn="sdpa", autocast=True, gpus=1, shard="none", online=False,
          dropout_is_default=True)


def timed(fn, repeat=3):
    times = []
    out = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def main() -> None:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "vramplan", "report", "8b", "--gpu", "rtx4090", "-o",
                    str(Path(tempfile.mkdtemp()) / "cold.html")], check=True, capture_output=True)
    print(f"cold `vramplan report 8b --gpu rtx4090 -o ...` (process start to file written): "
          f"{time.perf_counter() - t0:.2f} s")
    plotly_js()
    for model, gpu in (("8b", "rtx4090"), ("70b", "h100")):
        _shape, scenarios, spec = _build(model, gpu, KW)
        report, t_build = timed(lambda: model_report(scenarios, gpu=spec))
        page, t_html = timed(lambda: report.to_html())
        with tempfile.TemporaryDirectory() as d:
            _, t_write = timed(lambda: write_html(page, Path(d) / "r.html"))
        size = len(page.encode())
        rest = size - len(plotly_js().encode())
        print(f"{model} on {gpu}: build {t_build * 1000:.0f} ms (33-card GPU table included), page "
              f"{t_html * 1000:.0f} ms, write {t_write * 1000:.0f} ms; {size / 1e6:.2f} MB of which the report "
              f"itself {rest / 1e3:.0f} kB (the rest is plotly.js)")
    from vramplan.plan import plan_scenario
    from vramplan.records import row_from, to_frame

    rows = []
    env = {"source": "trace", "device": "cpu"}
    for s in _build("8b", None, KW)[1]:
        for seq in range(512, 512 * 51, 512):
            b = plan_scenario(s.with_(seq=seq))
            rows.append(row_from(b, env=env, measured={"meas_peak_tensor_bytes": b.peak_tensor_bytes}))
    df = to_frame(rows)
    report, t_acc = timed(lambda: accuracy_report(["bench.csv"], df=df))
    print(f"accuracy report over {len(df)} rows: {t_acc * 1000:.0f} ms")


if __name__ == "__main__":
    main()
