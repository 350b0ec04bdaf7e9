"""Reports as data: the scenario report (LoRA vs QLoRA on a GPU), the sweep report and the accuracy report.

Each builder takes library objects (Scenarios, a sweep DataFrame, measured records) and returns a
``page.Report``; the CLI writes ``report.to_html()``. Nothing here reads the clock, so the same inputs give
the same page byte for byte (the reports in ``reports/`` are checked against the code that way).
"""

from __future__ import annotations

from dataclasses import replace

from ..errors import VramplanError
from ..plan import COMPONENTS, plan_scenario, recipe_dict
from ..spec import Recipe, Scenario
from ..units import GiB
from . import figures as F
from . import text as T
from .page import Plot, Pre, Report, Section, Table, Text


def modelled_versions(plans) -> dict:
    """The library versions the planner models: the JSON contract's "modelled_versions"."""
    from ..cli import plan_json

    return plan_json(plans[0].scenario.model, plans, None)["modelled_versions"]


def _g2(n_bytes) -> str:
    return f"{int(n_bytes) / GiB:.2f}"


def _verdict_cell(plan) -> dict | str:
    if plan.fits is None:
        return {"text": "no GPU given", "class": "muted"}
    if plan.fits:
        return {"text": f"fits, {_g2(plan.headroom_bytes)} GiB to spare", "class": "ok"}
    return {"text": f"over by {_g2(-plan.headroom_bytes)} GiB", "class": "over"}


def full_reference(s: Scenario) -> Scenario:
    """Full fine-tuning of the same model and workload: the reference bar of the component figure."""
    r = s.recipe
    base = Recipe.default("full")
    return replace(s, recipe=replace(base, dtype=r.dtype, grad_ckpt=r.grad_ckpt, attn=r.attn, autocast=r.autocast))


def _doubling_grid(first: int, top: int, current: int, start=()) -> list[int]:
    """Powers of two from ``first`` and their 1.5x up to ``top``, plus ``start`` values and the current one."""
    out = set(start)
    v = first
    while v <= top:
        out.add(v)
        if v * 3 // 2 <= top:
            out.add(v * 3 // 2)
        v *= 2
    out.add(current)
    return sorted(out)


def seq_grid(current: int) -> list[int]:
    """Sequence lengths for the memory-vs-sequence plot: powers of two and their 1.5x, 256 .. 32k (or 4x the
    scenario's own length), plus the scenario's own value."""
    return _doubling_grid(256, min(max(32768, 4 * current), 4_194_304), current)


def batch_grid(current: int) -> list[int]:
    """Micro-batch sizes for the memory-vs-batch plot: 1, 2, 3, 4, 6, 8, ... 64 (or 4x the scenario's)."""
    return _doubling_grid(2, min(max(64, 4 * current), 65_536), current, start=(1,))


def curve(scenarios, knob: str, values) -> dict:
    """Peak bytes of each scenario's method at every value of ``seq`` or ``batch`` (vectorized plan)."""
    import numpy as np

    from ..grid import plan_grid

    out = {}
    for s in scenarios:
        w = s.workload
        seq = np.asarray(values if knob == "seq" else [w.seq] * len(values), dtype=np.int64)
        batch = np.asarray(values if knob == "batch" else [w.batch] * len(values), dtype=np.int64)
        cols = plan_grid(s.model, s.recipe, seq=seq, batch=batch, gpus=w.gpus, shard=w.shard, gpu=s.gpu)
        out[s.recipe.method] = [int(v) for v in cols["peak_bytes"]]
    return out


def gpu_rows(scenarios, cards) -> list[dict]:
    """Per catalogue card and method: the peak planned on that card, fits, and the largest batch (at the
    scenario's sequence) and sequence (at its batch) that fit, from ``solve.max_fit``."""
    from ..solve import max_fit

    rows = []
    for g in cards:
        row = {"gpu": g, "methods": {}}
        for s in scenarios:
            on = replace(s, gpu=g)
            b = plan_scenario(on)
            row["methods"][s.recipe.method] = {
                "plan": b,
                "max_batch": max_fit(on, "batch"),
                "max_seq": max_fit(on, "seq"),
            }
        rows.append(row)
    return rows


def scenario_tables(plans, gpu) -> list:
    """The scenario as tables: model, workload and GPU; every recipe knob per method; modelled versions."""
    s = plans[0].scenario
    model, w = s.model, s.workload
    about = Table(
        columns=("", ""),
        rows=(
            ("model", model.name),
            ("config source", model.source or model.name),
            ("architecture", f"{model.architecture} ({model.model_type})"),
            ("parameters", f"{model.params:,}"),
            ("layers × hidden × intermediate", f"{model.num_layers} × {model.hidden_size} × {model.intermediate_size}"),
            ("heads / kv heads / head dim", f"{model.num_heads} / {model.num_kv_heads} / {model.head_dim}"),
            ("vocabulary", f"{model.vocab_size:,}" + (" (tied embeddings)" if model.tie_word_embeddings else "")),
            ("sequence × micro-batch", f"{w.seq:,} × {w.batch} = {w.tokens:,} tokens per GPU"),
            ("GPUs", f"{w.gpus} ({w.shard})" if w.gpus > 1 else "1"),
            ("GPU", f"{gpu.name}, {_g2(gpu.memory_bytes)} GiB ({gpu.memory_bytes:,} B)" if gpu else "none given"),
        ),
        caption="Model and workload",
    )
    knobs = [recipe_dict(p.scenario.recipe) for p in plans]
    names = list(knobs[0])
    rows = []
    for k in names:
        if k == "method":
            continue
        rows.append((k,) + tuple("—" if d[k] is None else str(d[k]) for d in knobs))
    rows.append(("attention as run",) + tuple(p.detail["attention"] for p in plans))
    rows.append(("trainable parameters",) + tuple(f"{p.trainable_params:,}" for p in plans))
    rows.append(("peak (nvidia-smi), GiB",) + tuple(_g2(p.peak_bytes) for p in plans))
    rows.append(("verdict",) + tuple(_verdict_cell(p) for p in plans))
    recipe = Table(columns=("knob",) + tuple(F.METHOD_LABELS.get(p.method, p.method) for p in plans),
                   rows=tuple(rows), caption="Every knob of the recipe, per method")
    ver = Table(columns=("library", "version modelled"), rows=tuple(modelled_versions(plans).items()),
                caption="The library versions the memory model describes")
    return [about, recipe, ver]


def component_table(plans) -> Table:
    """Components, the three peaks and the phase of the peak, GiB, per method."""
    rows = [(F.COMPONENT_LABELS[c],) + tuple(_g2(p.components[c]) for p in plans) for c in COMPONENTS]
    rows.append(({"text": "peak (nvidia-smi)", "class": ""},) + tuple(_g2(p.peak_bytes) for p in plans))
    rows.append(("torch max reserved",) + tuple(_g2(p.peak_reserved_bytes) for p in plans))
    rows.append(("torch max allocated",) + tuple(_g2(p.peak_allocated_bytes) for p in plans))
    rows.append(("peak falls in",) + tuple(f"{p.peak_phase}: {p.peak_where}" for p in plans))
    n = len(plans)
    return Table(columns=("GiB",) + tuple(F.METHOD_LABELS.get(p.method, p.method) for p in plans), rows=tuple(rows),
                 numeric=tuple(range(1, n + 1)), caption="Components at the peak (they sum to the nvidia-smi peak)")


def gpu_table(rows, methods) -> Table:
    """Which cards fit, with the largest batch and sequence per card and method."""
    cols = ["GPU", "GiB"]
    for m in methods:
        lab = F.METHOD_LABELS.get(m, m)
        cols += [f"{lab} GiB", f"{lab} max batch", f"{lab} max seq"]
    out = []
    for row in rows:
        g = row["gpu"]
        cells = [g.name, _g2(g.memory_bytes)]
        for m in methods:
            d = row["methods"][m]
            b = d["plan"]
            cells += [{"text": f"fits, {_g2(b.headroom_bytes)} spare", "class": "ok"} if b.fits else
                      {"text": f"over by {_g2(-b.headroom_bytes)}", "class": "over"},
                      f"{d['max_batch']:,}" if d["max_batch"] else {"text": "—", "class": "muted"},
                      f"{d['max_seq']:,}" if d["max_seq"] else {"text": "—", "class": "muted"}]
        out.append(tuple(cells))
    numeric = tuple(i for i, c in enumerate(cols) if c.endswith(("batch", "seq")) or c == "GiB")
    return Table(columns=tuple(cols), rows=tuple(out), numeric=numeric,
                 caption="Every catalogue card, planned as itself (sm90+ cards have larger cuBLAS workspaces): "
                         "headroom or shortfall in GiB; max batch at the scenario's sequence length, max seq at "
                         "its batch size.")


def _smallest_fits(rows, method) -> str:
    fitting = [r["gpu"] for r in rows if r["methods"][method]["plan"].fits]
    if not fitting:
        return f"{F.METHOD_LABELS.get(method, method)}: no catalogue card fits."
    g = min(fitting, key=lambda g: (g.memory_bytes, g.price_usd or float("inf")))
    return (f"{F.METHOD_LABELS.get(method, method)}: {len(fitting)} of {len(rows)} cards fit; the smallest is "
            f"{g.name} ({_g2(g.memory_bytes)} GiB).")


def model_report(scenarios, *, gpu=None, cards=None, with_full: bool = True) -> Report:
    """The scenario report: LoRA vs QLoRA (and full fine-tuning as a reference) for one model and workload.

    ``scenarios`` are the scenarios of the methods compared (as ``cli._build`` makes them); ``cards`` is the
    GPU list of the GPU table and of the capacity lines (default: the catalogue).
    """
    if cards is None:
        from ..gpus import catalog

        cards = catalog()
    scenarios = list(scenarios)
    plans = [plan_scenario(s) for s in scenarios]
    shown = list(plans)
    if with_full and all(s.recipe.method != "full" for s in scenarios):
        shown.append(plan_scenario(full_reference(scenarios[0])))
    s0 = scenarios[0]
    model, w = s0.model, s0.workload
    capacities = F.capacity_groups(cards)

    title = f"{model.name} on {gpu.name}" if gpu else f"{model.name}: LoRA vs QLoRA memory"
    sections = []
    sections.append(Section("scenario", "Scenario and verdict", tuple(scenario_tables(shown, gpu))))

    bars = Plot("fig-components", F.components_figure(shown, gpu),
                caption="Each bar sums to the device-level peak (what nvidia-smi shows)"
                        + (". Full fine-tuning is a reference." if len(shown) > len(plans) else "."))
    sections.append(Section("components", "Memory by component", (bars, component_table(shown))))

    sections.append(Section("timeline", "The step, phase by phase", (
        Plot("fig-timeline", F.timeline_figure(plans, gpu), height=480,
             caption="Memory at each phase of one training step; the tallest bar is the peak. "
                     "The number above a bar is its total in GiB."),
    )))

    seqs, batches = seq_grid(w.seq), batch_grid(w.batch)
    seq_fig = F.curve_figure(f"Peak memory against sequence length (batch {w.batch})", "sequence length", seqs,
                             curve(scenarios, "seq", seqs), capacities=capacities, current=w.seq, log_x=True)
    batch_fig = F.curve_figure(f"Peak memory against micro-batch size (sequence {w.seq:,})", "micro-batch size",
                               batches, curve(scenarios, "batch", batches), capacities=capacities,
                               current=w.batch, log_x=True)
    sections.append(Section("scaling", "Sequence length and batch size", (
        Plot("fig-seq", seq_fig, caption="Dashed lines: catalogue GPU capacities, each drawn at the smallest card of that size "
                                         "and labelled with the cards. Where a curve crosses a line, those cards run "
                                         "out of memory."),
        Plot("fig-batch", batch_fig),
    )))

    rows = gpu_rows(scenarios, cards)
    methods = [s.recipe.method for s in scenarios]
    sections.append(Section("gpus", "Which GPUs fit", (
        Text(tuple(_smallest_fits(rows, m) for m in methods)),
        gpu_table(rows, methods),
    )))

    sections.append(Section("explained", "What each component is", tuple(
        Text(tuple(paras), title=heading) for heading, paras in T.explain(shown)
    )))
    meta = {"kind": "scenario", "model": model.name, "gpu": gpu.name if gpu else None, "seq": w.seq,
            "batch": w.batch, "methods": [p.method for p in shown]}
    return Report(title=title, summary=tuple(T.summary(plans, gpu)), sections=tuple(sections), meta=meta)


# --------------------------------------------------------------------------------------------------
# predictions against measurements

_PEAK_ORDER = ("peak_bytes", "peak_reserved_bytes", "peak_allocated_bytes", "peak_tensor_bytes")
_QUANTITY_LABELS = {**F.PEAK_LABELS, **F.COMPONENT_LABELS}


def _present(v) -> bool:
    """A measured cell holds a number (records keep a missing measurement as NA, never 0)."""
    try:
        import pandas as pd

        return v is not None and not pd.isna(v)
    except (TypeError, ValueError):
        return False


def _row_label(r) -> str:
    label = f"{r['model']} {F.METHOD_LABELS.get(r['method'], r['method'])} seq {int(r['seq'])} × {int(r['batch'])}"
    if r["method"] in ("lora", "qlora") and _present(r["rank"]):
        label += f" r{int(r['rank'])}"
    return label


def accuracy_rows(df) -> list[dict]:
    """Per measured row: every quantity with both a prediction and a measurement, and the headline error.

    The headline is the first peak measured, in the order nvidia-smi, torch reserved, torch allocated,
    tensor-level (a GPU profile has the first, a trace only the last). Error = predicted / measured - 1.
    """
    out = []
    for _, r in df.iterrows():
        pairs = {}
        for q in _PEAK_ORDER + tuple(COMPONENTS):
            pred, meas = r.get(f"pred_{q}"), r.get(f"meas_{q}")
            if _present(pred) and _present(meas) and int(meas) > 0:
                pairs[q] = (int(pred), int(meas))
        head = next((q for q in _PEAK_ORDER if q in pairs), None)
        out.append({"row": r, "label": _row_label(r), "pairs": pairs, "headline": head,
                    "error": None if head is None else pairs[head][0] / pairs[head][1] - 1.0})
    return out


def _median(values):
    v = sorted(values)
    n = len(v)
    if not n:
        return None
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def _pct(e) -> str:
    """A signed relative error in percent; one that rounds to zero is written 0.00 %."""
    text = f"{100 * e:+.2f}"
    return ("0.00" if text in ("+0.00", "-0.00") else text) + " %"


def accuracy_report(paths, *, df=None) -> Report:
    """Predicted against measured for every row of the measurement files (``records.read_records``).

    Rows with status ok are compared; oom and error rows are listed. A GPU profile compares the nvidia-smi,
    torch reserved and allocated peaks and the measurable components; a trace compares the tensor-level peak.
    """
    from ..records import read_records

    if df is None:
        df = read_records(paths)
    if df.empty:
        raise VramplanError(f"{', '.join(map(str, paths))}: no measured rows; record some with vramplan trace or "
                            "vramplan profile --out FILE.csv")
    ok = df[df["status"] == "ok"]
    failed = df[df["status"] != "ok"]
    rows = [a for a in accuracy_rows(ok) if a["pairs"]]
    if not rows:
        raise VramplanError("the measurement files hold no completed row with a measured peak; nothing to compare")

    # -- figures --------------------------------------------------------------------------------------
    panels = []
    for q in _PEAK_ORDER + tuple(COMPONENTS):
        pts = [{"pred": a["pairs"][q][0], "meas": a["pairs"][q][1], "group": a["row"]["method"],
                "text": f"{a['label']} ({a['row']['source']}, {a['row']['device']})"} for a in rows if q in a["pairs"]]
        if pts:
            panels.append({"label": _QUANTITY_LABELS[q], "points": pts, "quantity": q})
    scatter = F.accuracy_figure(panels)
    errors: dict = {}
    for a in rows:
        if a["error"] is not None:
            errors.setdefault(a["row"]["method"], []).append((a["label"], 100 * a["error"]))
    bars = F.error_bars(errors)

    # -- tables ---------------------------------------------------------------------------------------
    heads = [a for a in rows if a["error"] is not None]
    row_table = Table(
        columns=("scenario", "source", "device", "quantity", "measured GiB", "predicted GiB", "error"),
        rows=tuple((a["label"], str(a["row"]["source"]), str(a["row"]["device"]), _QUANTITY_LABELS[a["headline"]],
                    _g2(a["pairs"][a["headline"]][1]), _g2(a["pairs"][a["headline"]][0]), _pct(a["error"]))
                   for a in heads),
        numeric=(4, 5, 6), caption="Every completed row: its headline peak (error = predicted / measured − 1)")
    q_rows = []
    for p in panels:
        q = p["quantity"]
        errs = [(a["pairs"][q][0] / a["pairs"][q][1] - 1.0, a["label"]) for a in rows if q in a["pairs"]]
        worst = max(errs, key=lambda el: abs(el[0]))
        q_rows.append((_QUANTITY_LABELS[q], str(len(errs)), f"{100 * _median([abs(e) for e, _ in errs]):.2f} %",
                       _pct(worst[0]), worst[1]))
    q_table = Table(columns=("quantity", "rows", "median |error|", "worst error", "worst row"), rows=tuple(q_rows),
                    numeric=(1, 2, 3), caption="Error by quantity")
    env_cols = ("source", "device", "gpu_memory_bytes", "driver", "cuda", "torch", "transformers", "peft",
                "bitsandbytes", "date")
    envs: dict = {}
    for _, r in df.iterrows():
        key = tuple("—" if not _present(r[c]) else str(r[c]) for c in env_cols)
        envs[key] = envs.get(key, 0) + 1
    env_table = Table(columns=env_cols + ("rows",), rows=tuple(k + (str(n),) for k, n in envs.items()),
                      caption="Where the rows were measured")
    blocks_failed = ()
    if len(failed):
        blocks_failed = (Table(
            columns=("scenario", "status", "device", "predicted peak GiB", "error message"),
            rows=tuple((_row_label(r), str(r["status"]), str(r["device"]),
                        _g2(r["pred_peak_bytes"]) if _present(r["pred_peak_bytes"]) else "—",
                        str(r["error"]) if _present(r["error"]) else "")
                       for _, r in failed.iterrows()),
            numeric=(3,), caption="Rows that did not complete (an out-of-memory row where the prediction fits is "
                                  "a prediction error too)"),)

    # -- text -----------------------------------------------------------------------------------------
    med = _median([abs(a["error"]) for a in heads])
    worst = max(heads, key=lambda a: abs(a["error"]))
    sources = sorted({str(a["row"]["source"]) for a in rows})
    devices = sorted({str(a["row"]["device"]) for a in rows})
    summary = (
        f"{len(df)} measured rows ({len(rows)} compared, {len(failed)} did not complete) from "
        f"{', '.join(sources)} on {', '.join(devices)}. Median |error| of the headline peak {100 * med:.2f} %; "
        f"worst {_pct(worst['error'])} ({worst['label']}, {_QUANTITY_LABELS[worst['headline']]}).",
    )
    explain = []
    if "trace" in sources:
        explain.append("Trace rows run the real model code on fake tensors on the CPU: they measure what tensors "
                       "exist (the tensor-level peak and the components a tracer can attribute), not the CUDA "
                       "context, cuBLAS workspaces or the caching allocator, so they test the tensor part of the "
                       "model exactly and say nothing about overhead.")
    if "profile" in sources:
        explain.append("Profile rows ran the step on a GPU: the nvidia-smi peak is sampled from NVML, reserved "
                       "and allocated come from torch.cuda.max_memory_reserved() / max_memory_allocated().")
    for p in panels:
        q = p["quantity"]
        errs = [a["pairs"][q][0] / a["pairs"][q][1] - 1.0 for a in rows if q in a["pairs"]]
        over = sum(e > 0 for e in errs)
        explain.append(f"{_QUANTITY_LABELS[q]}: {len(errs)} rows, median |error| "
                       f"{100 * _median([abs(e) for e in errs]):.2f} %; the prediction is above the measurement in "
                       f"{over} of them and below in {sum(e < 0 for e in errs)}.")

    sections = (
        Section("accuracy", "Predicted against measured", (
            Plot("fig-accuracy", scatter, height=scatter["layout"]["height"],
                 caption="Each point is one measured row; on the dotted diagonal the prediction is exact."),
            Plot("fig-errors", bars, height=bars["layout"]["height"], caption="Signed error of each row's headline peak."),
            Text(tuple(explain)),
        )),
        Section("rows", "Per-row errors", (row_table, q_table) + blocks_failed),
        Section("environment", "GPUs and library versions measured on", (env_table,)),
    )
    meta = {"kind": "accuracy", "rows": int(len(df)), "compared": len(rows),
            "median_abs_error": round(float(med), 6), "worst_error": round(float(worst["error"]), 6)}
    return Report(title="vramplan accuracy: predicted against measured", summary=summary, sections=sections,
                  meta=meta)


# --------------------------------------------------------------------------------------------------
# a scenario file's sweep

_NUMERIC_AXES = ("seq", "batch", "rank")
_MAX_BARS = 48
_MAX_TABLE_ROWS = 400


def _value_text(name: str, value) -> str:
    if name == "method":
        return F.METHOD_LABELS.get(str(value), str(value))
    if name == "model":
        return str(value)
    if isinstance(value, bool):
        return f"{name} {'on' if value else 'off'}"
    if isinstance(value, float):
        return f"{name} {value:g}"
    return f"{name} {value}"


def _sweep_layout(sf):
    """(x axis name or None, series axis names): the numeric axis with the most values is the x axis; the
    other varying axes, except the GPU, name the series."""
    varying = [a.name for a in sf.varying]
    numeric = [n for n in _NUMERIC_AXES if n in varying]
    x = max(numeric, key=lambda n: (len(sf.axes[n].values), -_NUMERIC_AXES.index(n))) if numeric else None
    series = [n for n in varying if n not in (x, "gpu")]
    return x, series


def _signed(n_bytes) -> str:
    return f"{'+' if n_bytes >= 0 else '−'}{T.size(abs(n_bytes))}"


def _deltas(a: dict, b: dict) -> str:
    """What changed from sweep row a to row b, component by component (1 MiB or more), largest first."""
    d = [(int(b[f"{c}_bytes"]) - int(a[f"{c}_bytes"]), c) for c in COMPONENTS]
    d = sorted((x for x in d if abs(x[0]) >= 2**20), key=lambda x: -abs(x[0]))
    return ", ".join(f"{F.COMPONENT_LABELS[c]} {_signed(v)}" for v, c in d) or "no component moves by 1 MiB"


def _knob_effects(records: list, axes: list) -> list[str]:
    """For each varying knob: the change of the peak when only that knob changes (rows paired on every other
    varying knob), its range over the pairs, and the component that moves most."""
    out = []
    for a in axes:
        others = [n for n in axes if n != a]
        groups: dict = {}
        for r in records:
            groups.setdefault(tuple(str(r[n]) for n in others) + tuple(str(r[n]) for n in _NUMERIC_AXES),
                              {}).setdefault(r[a], r)
        values = list(dict.fromkeys(r[a] for r in records))
        base = values[0]
        for v in values[1:]:
            pairs = [(g[base], g[v]) for g in groups.values() if base in g and v in g]
            if not pairs:
                continue  # zipped with another knob: it never changes alone
            diffs = [int(y["peak_bytes"]) - int(x["peak_bytes"]) for x, y in pairs]
            comp = {c: sum(int(y[f"{c}_bytes"]) - int(x[f"{c}_bytes"]) for x, y in pairs) / len(pairs)
                    for c in COMPONENTS}
            main = max(comp, key=lambda c: abs(comp[c]))
            span = (f"{_signed(diffs[0])}" if min(diffs) == max(diffs) else
                    f"{_signed(min(diffs))} to {_signed(max(diffs))} over {len(pairs)} pairs")
            out.append(f"{_value_text(a, v)} instead of {_value_text(a, base)}: peak {span}; the component that "
                       f"moves most is {F.COMPONENT_LABELS[main]} ({_signed(round(comp[main]))} on average).")
    return out


def sweep_report(path, *, sweep=None, scenario_file=None, label: str | None = None) -> Report:
    """The report of a scenario file: the file itself, peak against its main numeric knob per series, the
    components of every scenario, and which of the file's GPUs each one fits.

    ``sweep`` (a ``sweep.SweepResult``) and ``scenario_file`` can be passed to skip loading and planning;
    ``label`` is how the page names the file (default: ``path`` as given).
    """
    from pathlib import Path

    from ..scenario_file import load_scenario_file
    from ..sweep import run_sweep

    sf = scenario_file or load_scenario_file(path)
    res = sweep or run_sweep(sf)
    if res.interrupted:
        raise VramplanError(f"{path}: the sweep was interrupted; no report written")
    df = res.df
    x_name, series_names = _sweep_layout(sf)
    gpu_values = [g for g in sf.axes["gpu"].values if g is not None]
    gpu_specs = [sf.gpus[g] for g in gpu_values]
    first_gpu = gpu_specs[0].id if gpu_specs else None

    # one row per scenario (the first GPU's rows: the peak depends on the card only through the cuBLAS workspace)
    rows = df if first_gpu is None else df[df["gpu"] == first_gpu]
    records = rows.to_dict("records")

    def series_label(r) -> str:
        return " · ".join(_value_text(n, r[n]) for n in series_names) or (sf.question and "peak") or "peak"

    # -- figures --------------------------------------------------------------------------------------
    blocks = []
    if gpu_specs:
        capacities = F.capacity_groups(gpu_specs, merge=1.0)
    else:
        from ..gpus import catalog

        capacities = F.capacity_groups(catalog())
    if x_name is not None:
        xs = sorted({int(r[x_name]) for r in records})
        series: dict = {}
        for r in records:
            series.setdefault(series_label(r), {})[int(r[x_name])] = int(r["peak_bytes"])
        lines = {lbl: [pts[x] for x in xs] for lbl, pts in series.items() if all(x in pts for x in xs)}
    if x_name is not None and lines:  # no line when the knob is zipped with the series' knobs: no curve
        fig = F.curve_figure(f"Peak memory against {x_name}", x_name, xs, lines, capacities=capacities,
                             log_x=max(xs) >= 8 * min(xs))
        blocks.append(Plot("fig-sweep-curve", fig, height=500,
                           caption="Dashed lines: the GPUs of the scenario file" if gpu_specs else
                           "Dashed lines: catalogue GPU capacities"))
    bar_rows = records[:_MAX_BARS]
    labels = []
    for r in bar_rows:
        parts = [_value_text(n, r[n]) for n in series_names]
        if x_name is not None:
            parts.append(_value_text(x_name, int(r[x_name])))
        # a category label per bar: several lines when there are few bars, one rotated line otherwise
        labels.append(("<br>" if len(bar_rows) <= 16 else " · ").join(F.esc(p) for p in parts) or "scenario")
    lines = [(g.memory_bytes, F.gpu_label(g)) for g in gpu_specs]
    comps = [{c: int(r[f"{c}_bytes"]) for c in COMPONENTS} for r in bar_rows]
    bars = F.stacked_components(labels, comps, lines, title="Memory at the peak, by component")
    bars["layout"]["xaxis"]["tickangle"] = -35 if len(bar_rows) > 16 else 0
    blocks.append(Plot("fig-sweep-components", bars, height=560,
                       caption=f"The first {_MAX_BARS} of {len(records)} scenarios." if len(records) > _MAX_BARS
                       else "Each bar sums to the device-level peak (what nvidia-smi shows)."))

    # -- tables ---------------------------------------------------------------------------------------
    shown_axes = [n for n in (a.name for a in sf.varying) if n != "gpu"]
    cols = tuple(shown_axes) + ("peak GiB", "peak falls in")
    table_rows = []
    by_key: dict = {}
    key_cols = [n for n in sf.axes if n != "gpu"]
    for r in df.to_dict("records"):
        key = tuple(str(r[k]) for k in key_cols if k in r)
        by_key.setdefault(key, {})[r["gpu"]] = r
    for per_gpu in list(by_key.values())[:_MAX_TABLE_ROWS]:
        r = next(iter(per_gpu.values()))
        cells = [_value_text(n, r[n]).removeprefix(f"{n} ") for n in shown_axes]
        cells += [_g2(r["peak_bytes"]), f"{r['peak_phase']}: {r['peak_where']}"]
        for g in gpu_specs:
            gr = per_gpu.get(g.id)
            if gr is None:
                cells.append("")
            elif gr["fits"]:
                cells.append({"text": f"fits, {_g2(gr['headroom_bytes'])} spare", "class": "ok"})
            else:
                cells.append({"text": f"over by {_g2(-gr['headroom_bytes'])}", "class": "over"})
        table_rows.append(tuple(cells))
    fit_table = Table(columns=cols + tuple(g.name for g in gpu_specs), rows=tuple(table_rows),
                      numeric=(len(shown_axes),),
                      caption=("Every scenario of the grid" if len(by_key) <= _MAX_TABLE_ROWS else
                               f"The first {_MAX_TABLE_ROWS} of {len(by_key)} scenarios")
                      + (" and whether it fits each GPU of the file (GiB)." if gpu_specs else "."))
    axes_table = Table(
        columns=("knob", "values", ""),
        rows=tuple((a.name, ", ".join("—" if v is None else str(v) for v in a.values),
                    {"text": "varies" if len(a.values) > 1 else ("set in the file" if a.given else "default"),
                     "class": "" if a.given else "muted"})
                   for a in sf.axes.values()),
        caption="Every knob of the grid")

    # -- text -----------------------------------------------------------------------------------------
    paras = []
    if x_name is not None:
        for lbl, pts in series.items():
            lo_x, hi_x = min(pts), max(pts)
            lo_r = next(r for r in records if series_label(r) == lbl and int(r[x_name]) == lo_x)
            hi_r = next(r for r in records if series_label(r) == lbl and int(r[x_name]) == hi_x)
            text = (f"{lbl}: the peak goes from {T.size(pts[lo_x])} at {x_name} {lo_x:,} to {T.size(pts[hi_x])} "
                    f"at {hi_x:,} ({_signed(pts[hi_x] - pts[lo_x])}): {_deltas(lo_r, hi_r)}.")
            fits_on = []
            for g in gpu_specs:
                sel = df[(df["gpu"] == g.id) & df["fits"].fillna(False).astype(bool)]
                sel = [int(r[x_name]) for r in sel.to_dict("records") if series_label(r) == lbl]
                if not sel:
                    fits_on.append(f"on {g.name} it fits at no {x_name} of the grid")
                elif max(sel) == hi_x and len(sel) == len(pts):
                    fits_on.append(f"on {g.name} it fits at every {x_name}")
                else:
                    fits_on.append(f"on {g.name} it fits up to {x_name} {max(sel):,}")
            if fits_on:
                joined = "; ".join(fits_on)
                text += " " + joined[0].upper() + joined[1:] + "."
            paras.append(text)
    else:
        for r in records[:_MAX_BARS]:
            top = max(COMPONENTS, key=lambda c: int(r[f"{c}_bytes"]))
            paras.append(f"{series_label(r)}: peak {T.size(r['peak_bytes'])} ({r['peak_phase']}, {r['peak_where']}); "
                         f"the largest part is {F.COMPONENT_LABELS[top]}, {T.size(r[f'{top}_bytes'])}.")
    paras += _knob_effects(records, series_names)
    n_fit = int(df["fits"].fillna(False).astype(bool).sum()) if gpu_specs else None
    summary = [sf.question or f"The sweep of {Path(str(path)).name}"]
    if gpu_specs:
        cards = f"{len(gpu_specs)} GPU{'s' if len(gpu_specs) > 1 else ''}"
        summary.append(f"{len(records)} scenarios × {cards}: {n_fit} of {len(df)} fit.")
    else:
        summary.append(f"{len(records)} scenarios; the file names no GPU.")
    file_text = Path(str(path)).read_text(encoding="utf-8") if Path(str(path)).is_file() else ""
    sections = (
        Section("scenario", "The scenario file", (
            Pre(file_text, caption=label or Path(str(path)).as_posix()) if file_text else Text(()),
            axes_table,
        )),
        Section("sweep", "Memory across the grid", tuple(blocks) + (Text(tuple(paras)),)),
        Section("fits", "Which scenarios fit", (fit_table,)),
    )
    meta = {"kind": "sweep", "file": Path(str(path)).name, "rows": int(len(df)), "x": x_name,
            "series": series_names}
    return Report(title=f"vramplan sweep: {Path(str(path)).stem}", summary=tuple(summary), sections=sections,
                  meta=meta)
