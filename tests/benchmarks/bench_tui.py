"""Re-render time of the terminal UI: one knob change -> both methods planned, the panels redrawn and painted.

Run: python tests/benchmarks/bench_tui.py

For the 7B model on a 24 GiB card, N changes of the seq field typed into the running app (headless, Pilot),
at 80x24 and 120x40; median and 95th percentile:
  plan       Session.plan: the fields' text checked and both methods planned (no textual)
  fits       the "what fits" solvers for both methods (largest batch, largest seq, smallest catalogue GPU)
  update     app.recompute(): plan + every panel told what to draw (the synchronous part of a change)
  paint      textual's screen update that paints the change (layout if needed, render of the changed panels)
  re-render  from the change to the end of that paint: update + waiting for the next frame (60 fps) + paint
             (the goal: under 50 ms); "its CPU": the process's CPU time over the same interval, which other
             processes on a busy machine do not inflate
  fits after the "what fits" panel's update, which runs right after that paint
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from vramplan.tui.state import Session, what_fits  # noqa: E402

N = 40


def stats(samples_s: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples_s)
    p95 = ms[min(len(ms) - 1, int(0.95 * len(ms)))]
    return f"median {statistics.median(ms):6.2f} ms   p95 {p95:6.2f} ms   (n={len(ms)})"


def bench_state() -> None:
    session = Session()
    values = session.initial_values("7b", "24gb")
    plan_t, fits_t = [], []
    for k in range(N):
        values["seq"] = str(512 * (1 + k % 16))
        t0 = time.perf_counter()
        planned = session.plan(values)
        t1 = time.perf_counter()
        for p in planned.plans:
            what_fits(p.scenario)
        plan_t.append(t1 - t0)
        fits_t.append(time.perf_counter() - t1)
    print(f"plan       {stats(plan_t)}")
    print(f"fits       {stats(fits_t)}")


async def bench_app(size: tuple[int, int]) -> None:
    from textual.screen import Screen

    from vramplan.tui.app import VramplanApp

    marks: dict[str, float | None] = {"changed": None, "cpu": None}
    rerender, cpu, update, paint, fits_after = [], [], [], [], []
    on_timer_update = Screen._on_timer_update
    recompute = VramplanApp.recompute
    show_fits = VramplanApp._show_fits

    def timed_update(self, *args, **kwargs):
        t0 = time.perf_counter()
        out = on_timer_update(self, *args, **kwargs)
        if marks["changed"] is not None:  # the first screen update after a change paints it
            t1 = time.perf_counter()
            rerender.append(t1 - marks["changed"])
            cpu.append(time.process_time() - marks["cpu"])
            paint.append(t1 - t0)
            marks["changed"] = None
        return out

    def timed_recompute(self, *args, **kwargs):
        t0, c0 = time.perf_counter(), time.process_time()
        out = recompute(self, *args, **kwargs)
        update.append(time.perf_counter() - t0)
        marks["changed"], marks["cpu"] = t0, c0
        return out

    def timed_fits(self, *args, **kwargs):
        t0 = time.perf_counter()
        out = show_fits(self, *args, **kwargs)
        fits_after.append(time.perf_counter() - t0)
        return out

    Screen._on_timer_update, VramplanApp.recompute, VramplanApp._show_fits = timed_update, timed_recompute, timed_fits
    try:
        app = VramplanApp("7b", "24gb")
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            await pilot.press("s", "1", "0", "2", "4")
            for samples in (rerender, cpu, update, paint, fits_after):
                samples.clear()
            for k in range(N // 2):  # 2 changes per round
                await pilot.press(str(k % 10))  # seq 1024 -> 1024k (k a digit): LoRA and QLoRA may go over
                await pilot.pause()
                await pilot.press("backspace")
                await pilot.pause()
    finally:
        Screen._on_timer_update, VramplanApp.recompute, VramplanApp._show_fits = on_timer_update, recompute, show_fits
    print(f"update     {stats(update)}   at {size[0]}x{size[1]}")
    print(f"paint      {stats(paint)}   at {size[0]}x{size[1]}")
    print(f"re-render  {stats(rerender)}   at {size[0]}x{size[1]}")
    print(f"  its CPU  {stats(cpu)}   at {size[0]}x{size[1]}")
    print(f"fits after {stats(fits_after)}   at {size[0]}x{size[1]}")


def main() -> None:
    bench_state()
    for size in ((80, 24), (120, 40)):
        asyncio.run(bench_app(size))


if __name__ == "__main__":
    main()
