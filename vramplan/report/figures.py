"""Plotly figures as plain dicts (``{"data": [...], "layout": {...}}``), built from Breakdowns and columns.

Plain dicts, not ``plotly.graph_objects``: they serialize deterministically (the golden test compares them
as JSON), need no import of plotly, and ``Plotly.newPlot`` draws them as they are. Sizes are integer bytes
everywhere else; here they become GiB (``y``, rounded to 4 decimals) with the exact bytes kept in
``customdata`` for the hover text. Every string that came from a user (model names, GPU names, paths) is
HTML-escaped before it goes into a figure: plotly.js renders trace names, titles and annotations as a small
HTML subset, and turns ``&lt;`` back into a literal ``<`` on screen.
"""

from __future__ import annotations

import html
import math

from ..plan import COMPONENT_LABELS, COMPONENTS
from ..units import GiB

# Tableau 10: distinguishable, and the same component has the same colour in every figure.
COMPONENT_COLORS = {
    "weights": "#4e79a7",
    "quant_constants": "#f28e2b",
    "adapters": "#59a14f",
    "gradients": "#e15759",
    "optimizer": "#76b7b2",
    "activations": "#edc948",
    "overhead": "#b07aa1",
}
METHOD_LABELS = {"lora": "LoRA", "qlora": "QLoRA", "full": "full FT"}
METHOD_COLORS = {"lora": "#1f77b4", "qlora": "#d62728", "full": "#7f7f7f"}
METHOD_DASH = {"lora": "solid", "qlora": "solid", "full": "dot"}
# Series of a sweep that are not a bare method name (d3's category10).
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
# Peak kinds: the column suffix in records and the label people read.
PEAK_LABELS = {
    "peak_bytes": "peak (nvidia-smi)",
    "peak_reserved_bytes": "torch max reserved",
    "peak_allocated_bytes": "torch max allocated",
    "peak_tensor_bytes": "tensor-level peak",
}

_FONT = {"family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "size": 13}
_GRID = "#e5e5e5"


def gib(n_bytes) -> float:
    """Bytes as GiB for a plot axis, rounded to 4 decimals (0.1 MiB) so figure JSON is stable."""
    return round(int(n_bytes) / GiB, 4)


def esc(text) -> str:
    """HTML-escape a user string for plotly text (titles, trace names, annotations, hover labels)."""
    return html.escape(str(text), quote=True)


def _layout(title: str, **extra) -> dict:
    layout = {
        "title": {"text": title, "x": 0.0, "xanchor": "left", "y": 0.98, "yanchor": "top", "font": {"size": 16}},
        "font": _FONT,
        "paper_bgcolor": "white",
        "plot_bgcolor": "white",
        "margin": {"l": 70, "r": 30, "t": 100, "b": 60},
        "legend": {"orientation": "h", "x": 0.0, "xanchor": "left", "y": 1.02, "yanchor": "bottom"},
        "hoverlabel": {"namelength": -1},
    }
    layout.update(extra)
    return layout


def _axis(title: str, **extra) -> dict:
    axis = {"title": {"text": title}, "gridcolor": _GRID, "zerolinecolor": "#bbbbbb", "automargin": True}
    axis.update(extra)
    return axis


def _hline(y_gib: float, label: str, *, color: str = "#222222", dash: str = "dash", xref: str = "paper",
           yref: str = "y") -> tuple[dict, dict]:
    """A horizontal line across the plot and its label at the right end: (shape, annotation)."""
    shape = {"type": "line", "xref": xref, "yref": yref, "x0": 0, "x1": 1, "y0": y_gib, "y1": y_gib,
             "line": {"color": color, "width": 1.5, "dash": dash}}
    note = {"xref": xref, "yref": yref, "x": 1, "y": y_gib, "xanchor": "right", "yanchor": "bottom",
            "text": label, "showarrow": False, "font": {"size": 11, "color": color}}
    return shape, note


def gpu_label(gpu) -> str:
    """'NVIDIA GeForce RTX 4090 · 23.99 GiB', escaped."""
    size = f"{gib(gpu.memory_bytes):.2f} GiB"
    if gpu.name == f"{gib(gpu.memory_bytes):g} GiB":
        return esc(f"{size} GPU")
    return esc(f"{gpu.name} · {size}")


# --------------------------------------------------------------------------------------------------
# one scenario: components and the step timeline


def components_figure(plans, gpu=None, *, title: str = "Memory at the peak, by component") -> dict:
    """Stacked bars: one bar per method (LoRA, QLoRA, full FT), one segment per component, the GPU as a line.

    ``plans`` are Breakdowns; each bar sums to that method's ``peak_bytes`` (the nvidia-smi peak).
    """
    labels = [METHOD_LABELS.get(p.method, esc(p.method)) for p in plans]
    lines = [(gpu.memory_bytes, gpu_label(gpu))] if gpu is not None else []
    return stacked_components(labels, [p.components for p in plans], lines, title=title)


def stacked_components(labels, components: list, lines=(), *, title: str) -> dict:
    """Stacked component bars, one per label (already escaped), with horizontal lines ``(bytes, label)``.

    ``components`` holds one mapping per bar: component name -> bytes (the seven COMPONENTS).
    """
    x = list(labels)
    data = []
    for c in COMPONENTS:
        data.append({
            "type": "bar", "name": COMPONENT_LABELS[c], "x": x,
            "y": [gib(comp[c]) for comp in components],
            "customdata": [int(comp[c]) for comp in components],
            "marker": {"color": COMPONENT_COLORS[c]},
            "hovertemplate": f"%{{x}} · {COMPONENT_LABELS[c]}: %{{y:.2f}} GiB (%{{customdata:,}} B)<extra></extra>",
        })
    totals = [sum(int(comp[c]) for c in COMPONENTS) for comp in components]
    annotations = []
    if len(x) <= 12:  # the total above each bar, where there is room for it
        annotations = [{"x": x[k], "y": gib(t), "text": f"{gib(t):.2f} GiB", "showarrow": False, "yanchor": "bottom",
                        "font": {"size": 12}} for k, t in enumerate(totals)]
    shapes = []
    for k, (mem, text) in enumerate(lines):
        shape, note = _hline(gib(mem), text, color="#000000" if len(lines) == 1 else "#555555")
        if len(lines) > 1 and k % 2:
            note.update(x=0, xanchor="left")
        shapes.append(shape)
        annotations.append(note)
    top = max([gib(t) for t in totals] + [gib(mem) for mem, _ in lines])
    layout = _layout(title, barmode="stack", shapes=shapes, annotations=annotations,
                     xaxis=_axis("", type="category"), yaxis=_axis("GiB", range=[0, round(top * 1.12, 4)]))
    return {"data": data, "layout": layout}


def timeline_figure(plans, gpu=None, *, title: str = "The step, phase by phase") -> dict:
    """One panel per method: stacked components at each phase of the step (load ... optimizer), GPU line.

    The backward bar is the backward state with the largest total (the one ``plan`` reports), its place in
    the step (``where``) is in the hover text.
    """
    n = len(plans)
    gap = 0.06
    width = (1.0 - gap * (n - 1)) / n
    layout = _layout(title, barmode="stack", shapes=[], annotations=[])
    data = []
    top = max(ph.device_bytes for p in plans for ph in p.phases)
    if gpu is not None:
        top = max(top, gpu.memory_bytes)
    for k, p in enumerate(plans):
        suffix = "" if k == 0 else str(k + 1)
        xa, ya = f"x{suffix}", f"y{suffix}"
        x0 = round(k * (width + gap), 4)
        x1 = round(x0 + width, 4)
        layout[f"xaxis{suffix}"] = _axis("", domain=[x0, x1], anchor=ya)
        layout["annotations"].append({"text": f"<b>{METHOD_LABELS.get(p.method, esc(p.method))}</b>",
                                      "xref": f"{xa} domain", "yref": f"{ya} domain", "x": 0.5, "y": -0.1,
                                      "xanchor": "center", "yanchor": "top", "showarrow": False})
        layout[f"yaxis{suffix}"] = _axis("GiB" if k == 0 else "", anchor=xa, range=[0, round(gib(top) * 1.1, 4)],
                                         **({} if k == 0 else {"matches": "y", "showticklabels": True}))
        phases = [ph.name for ph in p.phases]
        wheres = [ph.where for ph in p.phases]
        for c in COMPONENTS:
            data.append({
                "type": "bar", "name": COMPONENT_LABELS[c], "legendgroup": c, "showlegend": k == 0,
                "x": phases, "y": [gib(ph.components[c]) for ph in p.phases],
                "customdata": [[int(ph.components[c]), w] for ph, w in zip(p.phases, wheres)],
                "marker": {"color": COMPONENT_COLORS[c]}, "xaxis": xa, "yaxis": ya,
                "hovertemplate": (f"{METHOD_LABELS.get(p.method, p.method)} · %{{x}} (%{{customdata[1]}}) · "
                                  f"{COMPONENT_LABELS[c]}: %{{y:.2f}} GiB<extra></extra>"),
            })
        for ph in p.phases:
            layout["annotations"].append({
                "x": ph.name, "y": gib(ph.device_bytes), "xref": xa, "yref": ya, "showarrow": False,
                "yanchor": "bottom", "text": f"{gib(ph.device_bytes):.1f}", "font": {"size": 10},
            })
        if gpu is not None:
            xdom = f"{xa} domain"
            shape, note = _hline(gib(gpu.memory_bytes), gpu_label(gpu) if k == n - 1 else "", color="#000000",
                                 xref=xdom, yref=ya)
            layout["shapes"].append(shape)
            if k == n - 1:
                layout["annotations"].append(note)
    return {"data": data, "layout": layout}


# --------------------------------------------------------------------------------------------------
# memory against a knob, with the catalogue's capacities


def capacity_groups(cards, *, merge: float = 1.10) -> list[dict]:
    """Catalogue cards grouped by capacity: a card joins a group when it holds at most ``merge`` times the
    smallest card of the group (15 and 16 GiB cards share one line). The line sits at the smallest card.

    Returns ``[{"memory_bytes": int, "label": str, "cards": [ids]}]`` sorted by memory.
    """
    out: list[dict] = []
    for g in sorted(cards, key=lambda g: (g.memory_bytes, g.id)):
        if out and g.memory_bytes <= out[-1]["memory_bytes"] * merge:
            out[-1]["members"].append(g)
        else:
            out.append({"memory_bytes": int(g.memory_bytes), "members": [g]})
    for grp in out:
        members = grp.pop("members")
        lo, hi = round(members[0].memory_bytes / GiB), round(members[-1].memory_bytes / GiB)
        ids = [g.id for g in members]
        shown = ", ".join(ids[:3]) + (f" +{len(ids) - 3}" if len(ids) > 3 else "")
        grp["label"] = f"{lo}{'' if lo == hi else f'–{hi}'} GiB: {shown}"
        grp["cards"] = ids
    return out


def _visible_capacities(groups: list[dict], lo_bytes: int, hi_bytes: int) -> list[dict]:
    """The capacities within the plotted range, the largest one below it (too small at every point) and the
    smallest one above it (large enough at every point)."""
    below = [g for g in groups if g["memory_bytes"] < lo_bytes]
    inside = [g for g in groups if lo_bytes <= g["memory_bytes"] <= hi_bytes]
    above = [g for g in groups if g["memory_bytes"] > hi_bytes]
    return below[-1:] + inside + above[:1]


_LOG_TICKS = (0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


def curve_figure(title: str, x_title: str, xs, series: dict, *, capacities=(), current=None,
                 log_x: bool = False) -> dict:
    """Peak memory against one knob: one line per method, catalogue capacities as horizontal lines.

    ``series`` maps a method name to a list of peak bytes, one per ``xs`` value. The y axis is logarithmic
    (GiB), so the capacities of small and large cards are equally readable; ``current`` marks the scenario's
    own value with a vertical line. Capacity labels alternate between the right and left ends of their lines.
    """
    xs = [int(v) for v in xs]
    data = []
    values = [int(v) for ys in series.values() for v in ys]
    for k, (name, ys) in enumerate(series.items()):
        label = METHOD_LABELS.get(name, esc(name))
        data.append({
            "type": "scatter", "mode": "lines+markers", "name": label,
            "x": xs, "y": [gib(v) for v in ys], "customdata": [int(v) for v in ys],
            "line": {"color": METHOD_COLORS.get(name, PALETTE[k % len(PALETTE)]), "width": 2.5,
                     "dash": METHOD_DASH.get(name, "solid")},
            "marker": {"size": 5},
            "hovertemplate": f"{label}: %{{y:.2f}} GiB<extra></extra>",
        })
    lo, hi = min(values), max(values)
    shown = _visible_capacities(list(capacities), lo, hi)
    shapes, annotations = [], []
    for k, g in enumerate(shown):
        y = gib(g["memory_bytes"])
        shapes.append({"type": "line", "xref": "paper", "yref": "y", "x0": 0, "x1": 1, "y0": y, "y1": y,
                       "line": {"color": "#777777", "width": 1, "dash": "dash"}})
        right = k % 2 == 0
        annotations.append({"xref": "paper", "yref": "y", "x": 1 if right else 0, "y": round(math.log10(y), 6),
                            "xanchor": "right" if right else "left", "yanchor": "bottom", "showarrow": False,
                            "text": esc(g["label"]), "font": {"size": 10, "color": "#555555"}})
    if current is not None:
        shapes.append({"type": "line", "xref": "x", "yref": "paper", "x0": int(current), "x1": int(current),
                       "y0": 0, "y1": 1, "line": {"color": "#999999", "width": 1, "dash": "dot"}})
        annotations.append({"xref": "x", "yref": "paper", "x": round(math.log10(current), 6) if log_x else int(current),
                            "y": 1, "yanchor": "bottom", "showarrow": False, "text": f"this scenario: {int(current):,}",
                            "font": {"size": 11, "color": "#666666"}})
    y_lo = min([lo] + [g["memory_bytes"] for g in shown])
    y_hi = max([hi] + [g["memory_bytes"] for g in shown])
    ticks = [t for t in _LOG_TICKS if y_lo / GiB / 1.5 <= t <= y_hi / GiB * 1.5]
    yaxis = _axis("peak GiB (nvidia-smi), log scale", type="log", tickvals=ticks, ticktext=[f"{t:g}" for t in ticks],
                  range=[round(math.log10(y_lo / GiB / 1.15), 6), round(math.log10(y_hi / GiB * 1.15), 6)])
    xaxis = _axis(esc(x_title))
    if log_x:
        ticks_x = xs_ticks(xs)
        xaxis.update(type="log", tickvals=ticks_x, ticktext=[_short(v) for v in ticks_x])
    layout = _layout(title, shapes=shapes, annotations=annotations, xaxis=xaxis, yaxis=yaxis, hovermode="x unified")
    return {"data": data, "layout": layout}


def xs_ticks(xs) -> list[int]:
    """Powers of two between the smallest and largest x (tick marks of a log axis of token counts)."""
    lo, hi = min(xs), max(xs)
    ticks = []
    v = 1
    while v <= hi:
        if v >= lo:
            ticks.append(v)
        v *= 2
    return ticks


def _short(v: int) -> str:
    """1024 -> '1k', 131072 -> '128k', 512 -> '512'."""
    return f"{v // 1024}k" if v >= 1024 and v % 1024 == 0 else str(v)


# --------------------------------------------------------------------------------------------------
# predicted against measured


def accuracy_figure(panels: list[dict], *, title: str = "Each peak and component: predicted (x) against measured (y)") -> dict:
    """A grid of scatter panels, one per quantity (a peak or a component): x predicted, y measured.

    ``panels`` items: ``{"label": str, "points": [{"pred": int, "meas": int, "group": str, "text": str}]}``;
    each panel has the y = x diagonal and its own unit (GiB, or MiB when every value is under 1 GiB).
    Points are coloured by ``group`` (usually the method).
    """
    n = len(panels)
    cols = min(3, max(n, 1))
    rows = max(1, math.ceil(n / cols))
    height = 120 + 330 * rows
    plot_h = height - 120 - 70
    hgap, vgap = 0.08, (round(110 / plot_h, 4) if rows > 1 else 0.0)  # room for an axis title and a panel title
    w = (1 - hgap * (cols - 1)) / cols
    h = (1 - vgap * (rows - 1)) / rows
    layout = _layout(title, shapes=[], annotations=[], height=height, showlegend=True)
    layout["margin"] = {"l": 70, "r": 30, "t": 120, "b": 70}
    # the legend sits 30 px above the top row, clear of the panel titles
    layout["legend"] = dict(layout["legend"], y=round(1 + 30 / plot_h, 4))
    data = []
    seen_groups: set = set()
    for k, panel in enumerate(panels):
        r, c = divmod(k, cols)
        suffix = "" if k == 0 else str(k + 1)
        xa, ya = f"x{suffix}", f"y{suffix}"
        x0 = round(c * (w + hgap), 4)
        y1 = round(1 - r * (h + vgap), 4)
        pts = panel["points"]
        top = max([max(p["pred"], p["meas"]) for p in pts] + [1])
        unit, div = ("GiB", GiB) if top >= GiB else ("MiB", 1024**2)

        def conv(b, div=div):
            return round(int(b) / div, 4)

        rng = [0, round(top / div * 1.08, 4)]
        layout[f"xaxis{suffix}"] = _axis(f"predicted {unit}", domain=[x0, round(x0 + w, 4)], anchor=ya, range=rng)
        layout[f"yaxis{suffix}"] = _axis(f"measured {unit}", domain=[round(y1 - h, 4), y1], anchor=xa, range=rng)
        layout["annotations"].append({"text": f"<b>{esc(panel['label'])}</b>", "xref": f"{xa} domain",
                                      "yref": f"{ya} domain", "x": 0, "y": 1.0, "xanchor": "left",
                                      "yanchor": "bottom", "showarrow": False})
        layout["shapes"].append({"type": "line", "xref": xa, "yref": ya, "x0": 0, "y0": 0, "x1": rng[1],
                                 "y1": rng[1], "line": {"color": "#999999", "width": 1, "dash": "dot"}})
        for grp in sorted({p["group"] for p in pts}):
            sel = [p for p in pts if p["group"] == grp]
            data.append({
                "type": "scatter", "mode": "markers", "name": METHOD_LABELS.get(grp, esc(grp)), "legendgroup": grp,
                "showlegend": grp not in seen_groups, "xaxis": xa, "yaxis": ya,
                "x": [conv(p["pred"]) for p in sel], "y": [conv(p["meas"]) for p in sel],
                "customdata": [[int(p["pred"]), int(p["meas"])] for p in sel],
                "text": [esc(p["text"]) for p in sel],
                "marker": {"color": METHOD_COLORS.get(grp, "#444444"), "size": 8, "opacity": 0.85},
                "hovertemplate": (f"%{{text}}<br>predicted %{{x:.3f}} {unit} · measured %{{y:.3f}} {unit}"
                                  "<br>(%{customdata[0]:,} B · %{customdata[1]:,} B)<extra></extra>"),
            })
            seen_groups.add(grp)
    return {"data": data, "layout": layout}


def error_bars(errors: dict, *, title: str = "Error of the headline peak, per row") -> dict:
    """Horizontal bars of the signed relative error (predicted / measured - 1, in %) per row, one colour per
    group (method). ``errors`` maps a group to ``[(row label, error_pct)]``."""
    data = []
    n = 0
    for grp, items in errors.items():
        n += len(items)
        data.append({
            "type": "bar", "orientation": "h", "name": METHOD_LABELS.get(grp, esc(grp)),
            "y": [esc(lbl) for lbl, _ in items], "x": [round(float(e), 3) for _, e in items],
            "marker": {"color": METHOD_COLORS.get(grp, "#444444")},
            "hovertemplate": "%{y}: %{x:.2f} %<extra></extra>",
        })
    height = 200 + 24 * n
    layout = _layout(title, height=height, xaxis=_axis("predicted / measured − 1 (%)"),
                     yaxis=_axis("", autorange="reversed", type="category"), barmode="group")
    layout["legend"] = dict(layout["legend"], y=round(1 + 30 / (height - 160), 4))
    return {"data": data, "layout": layout}
