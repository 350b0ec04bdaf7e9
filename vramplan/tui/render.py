"""What the screen draws, as rich Text built from a ``Planned`` state and a width. No textual import.

Every picture is readable without colour: each component has its own fill character (the legend names
them), the GPU's capacity is a ``┃`` in the bar, and verdicts carry ✓ / ✗ and words, not only green / red.
Colour, where the terminal has it, is added on top as styles.
"""

from __future__ import annotations

from rich.text import Text

from ..plan import COMPONENTS
from ..units import fmt_gib, gib

METHOD_LABELS = {"lora": "LoRA", "qlora": "QLoRA", "full": "full FT"}

# component -> (fill character, short legend label, style). Fill characters differ so that a bar reads
# without colour; the background tints the partial-coverage characters into solid bands where colour exists.
SEGMENTS = {
    "weights": ("█", "weights", "#4e79a7 on #2c4a6b"),
    "quant_constants": ("▓", "quant consts", "#8cd3cc on #3f6f6b"),
    "adapters": ("▒", "adapters", "#8fd17f on #2f5f2a"),
    "gradients": ("░", "gradients", "#f5dc6e on #6b5a14"),
    "optimizer": ("▄", "optimizer", "#f7a74f on #6b3d0e"),
    "activations": ("▞", "activations", "#f08a8b on #6b2021"),
    "overhead": ("·", "overhead", "#d0d0d0 on #4a4a4a"),
}
CAPACITY_CHAR = "┃"
CAPACITY_STYLE = "bold"
FITS_STYLE = "bold #6fcf6f"
OVER_STYLE = "bold #ff6b6b"
# Eighths of a cell, for bars drawn in one character (the timeline): "" then ▏ ... ▉.
_EIGHTHS = ("", "▏", "▎", "▍", "▌", "▋", "▊", "▉")
TIMELINE_STYLE = "#4e79a7"


def verdict_text(plan) -> Text:
    """'✓ fits, 9.16 GiB to spare' / '✗ OVER by 1.20 GiB' / 'no GPU given', styled."""
    if plan.fits is None:
        return Text("no GPU: type one for a verdict", style="dim")
    if plan.fits:
        return Text(f"✓ fits, {fmt_gib(plan.headroom_bytes)} to spare", style=FITS_STYLE)
    return Text(f"✗ OVER by {fmt_gib(-plan.headroom_bytes)}", style=OVER_STYLE)


def _gpu_name(gpu, room: int) -> str:
    """The card's name, or its id when the name does not fit in ``room`` columns."""
    return gpu.name if len(gpu.name) <= room else gpu.id


def _cells(values: list[int], scale: int, width: int) -> list[int]:
    """Whole cells per value on a bar where ``scale`` bytes fill ``width`` cells (largest remainder rounding)."""
    if scale <= 0 or width <= 0:
        return [0] * len(values)
    total = sum(values)
    target = round(total * width / scale)
    exact = [v * width / scale for v in values]
    cells = [int(e) for e in exact]
    order = sorted(range(len(values)), key=lambda i: exact[i] - cells[i], reverse=True)
    for i in order[: max(0, target - sum(cells))]:
        cells[i] += 1
    return cells


def stacked_bar(components: dict, scale: int, width: int, capacity: int | None) -> Text:
    """One row of ``width`` cells: the components in COMPONENTS order, then blanks; ``┃`` added at capacity."""
    values = [int(components[c]) for c in COMPONENTS]
    cells = _cells(values, scale, width)
    chars: list[tuple[str, str]] = []
    for c, n in zip(COMPONENTS, cells):
        char, _, style = SEGMENTS[c]
        chars += [(char, style)] * n
    chars += [(" ", "")] * (width - len(chars))
    if capacity is not None and scale > 0:
        at = min(width, round(capacity * width / scale))
        chars.insert(at, (CAPACITY_CHAR, CAPACITY_STYLE))
    return _runs(chars)


def _runs(chars: list[tuple[str, str]]) -> Text:
    """Text from (character, style) cells, one span per run of equal cells (fewer segments to paint)."""
    text = Text()
    k = 0
    while k < len(chars):
        j = k
        while j < len(chars) and chars[j] == chars[k]:
            j += 1
        text.append(chars[k][0] * (j - k), chars[k][1] or None)
        k = j
    return text


def legend(width: int, capacity_label: str | None) -> Text:
    """The fill characters and what they mean, wrapped between items to ``width`` columns."""
    items = [(SEGMENTS[c][0], SEGMENTS[c][1], SEGMENTS[c][2]) for c in COMPONENTS]
    if capacity_label:
        items.append((CAPACITY_CHAR, capacity_label, CAPACITY_STYLE))
    out = Text(style="dim")
    col = 0
    for char, label, style in items:
        size = len(label) + 2
        if col and col + 2 + size > width:
            out.append("\n")
            col = 0
        elif col:
            out.append("  ")
            col += 2
        out.append(char, style)
        out.append(" " + label)
        col += size
    return out


def _scale(planned) -> int:
    peaks = [p.peak_bytes for p in planned.plans]
    phases = [ph.device_bytes for p in planned.plans for ph in p.phases]
    cap = planned.gpu.memory_bytes if planned.gpu else 0
    return max([cap, *peaks, *phases, 1])


def bars(planned, width: int) -> Text:
    """The verdict panel: per method a stacked bar against the capacity line, the verdict and the peak phase."""
    width = max(width, 30)
    label_w = max(len(METHOD_LABELS[p.method]) for p in planned.plans) + 1
    cap = planned.gpu.memory_bytes if planned.gpu else None
    bar_w = width - label_w - (1 if cap is not None else 0)
    scale = _scale(planned)
    out = Text()
    title = "Peak memory per GPU" + (f" vs {_gpu_name(planned.gpu, width - 23)}" if planned.gpu else "")
    out.append(title + "\n", style="bold")
    for p in planned.plans:
        out.append(METHOD_LABELS[p.method].ljust(label_w), style="bold")
        out.append_text(stacked_bar(p.components, scale, bar_w, cap))
        out.append("\n")
        verdict = verdict_text(p)
        peak = f"peak {fmt_gib(p.peak_bytes)} in {p.peak_phase}"
        where = f" ({p.peak_where})"
        room = width - label_w
        line = Text(" " * label_w)
        line.append_text(verdict)
        if len(verdict) + 3 + len(peak) + len(where) <= room:
            line.append(" · " + peak + where)
        elif len(verdict) + 3 + len(peak) <= room:
            line.append(" · " + peak)
        else:
            line.append("\n" + " " * label_w + peak)
        out.append_text(line)
        out.append("\n")
    cap_label = "GPU memory" if planned.gpu else None
    out.append_text(legend(width, cap_label))
    return out


def _one_bar(value: int, scale: int, width: int, capacity: int | None) -> Text:
    """A single-colour bar in eighths of a cell, ``width`` cells wide, with ``┊`` where the capacity falls."""
    eighths = round(value * width * 8 / scale) if scale else 0
    full, rest = divmod(min(eighths, width * 8), 8)
    cells = ["█"] * full + ([_EIGHTHS[rest]] if rest else [])
    cells += [" "] * (width - len(cells))
    cap_at = None if capacity is None else min(width - 1, round(capacity * width / scale) - 1)
    # the capacity mark shows on blank cells and on bar cells alike (a bar past it crosses it)
    return _runs([("┊", "bold" if ch != " " else "dim") if i == cap_at else (ch, TIMELINE_STYLE)
                  for i, ch in enumerate(cells)])


def timeline(planned, width: int) -> Text:
    """Device memory at each phase of the step (load, forward, loss, backward, optimizer) for each method."""
    width = max(width, 30)
    plans = planned.plans
    scale = _scale(planned)
    cap = planned.gpu.memory_bytes if planned.gpu else None
    name_w = max(len(ph.name) for ph in plans[0].phases) + 1
    value_w = max(len(f"{gib(ph.device_bytes):.2f}") for p in plans for ph in p.phases) + 1  # "14.84*"
    per = (width - name_w) // len(plans)
    bar_w = max(per - value_w - 2, 4)
    out = Text()
    head = "Step memory over time, GiB"
    keys = "  * peak" + ("  ┊ capacity" if cap else "")
    out.append(head, style="bold")
    out.append((keys if len(head) + len(keys) <= width else "") + "\n", style="dim")
    out.append(" " * name_w)
    for p in plans:
        out.append(METHOD_LABELS[p.method].ljust(per), style="bold")
    out.append("\n")
    for k, phase in enumerate(plans[0].phases):
        out.append(phase.name.ljust(name_w))
        for p in plans:
            ph = p.phases[k]
            is_peak = ph.device_bytes == p.peak_bytes and ph.name == p.peak_phase
            out.append_text(_one_bar(ph.device_bytes, scale, bar_w, cap))
            value = f"{gib(ph.device_bytes):.2f}" + ("*" if is_peak else "")
            out.append(" " + value.rjust(value_w), style="bold" if is_peak else "")
            out.append(" " * (per - bar_w - 1 - value_w))
        out.append("\n")
    out.rstrip()
    return out


def component_table(planned, width: int) -> Text:
    """Bytes, GiB and share of the peak per component; one table per method when the panel is narrow.

    Drawn as aligned text rather than a rich Table: a Table takes ~14 ms to lay out, this ~0.5 ms.
    """
    plans = planned.plans
    name_w = max(len(SEGMENTS[c][1]) for c in COMPONENTS) + 2  # "▓ quant consts"

    def block(methods) -> Text:
        header = [("component", "")]
        rows = []
        for p in methods:
            header += [(f"{METHOD_LABELS[p.method]} bytes", "bytes"), ("GiB", "gib"), ("share", "share")]
        for c in COMPONENTS:
            row = []
            for p in methods:
                v = int(p.components[c])
                row += [f"{v:,}", f"{gib(v):.2f}", f"{100 * v / p.peak_bytes:.1f}%"]
            rows.append((c, row))
        total = []
        for p in methods:
            total += [f"{p.peak_bytes:,}", f"{gib(p.peak_bytes):.2f}", "100%"]
        widths = [max(len(h[0]), *(len(r[1][k]) for r in rows), len(total[k])) for k, h in enumerate(header[1:])]
        out = Text()
        out.append("component".ljust(name_w), style="bold")
        for (label, _), w in zip(header[1:], widths):
            out.append(" " + label.rjust(w), style="bold")
        for c, row in rows:
            char, name, style = SEGMENTS[c]
            out.append("\n")
            out.append(char, style)
            out.append((" " + name).ljust(name_w - 1))
            for cell, w in zip(row, widths):
                out.append(" " + cell.rjust(w))
        out.append("\n")
        out.append("peak".ljust(name_w), style="bold")
        for cell, w in zip(total, widths):
            out.append(" " + cell.rjust(w), style="bold")
        return out

    out = Text()
    out.append("Components at the peak\n", style="bold")
    one = block(plans)
    if max(len(line) for line in one.plain.splitlines()) <= width:
        out.append_text(one)
        return out
    for k, p in enumerate(plans):
        if k:
            out.append("\n\n")
        out.append_text(block([p]))
    return out


def _count(n: int | None, limit: int) -> str:
    if n is None:
        return "-"
    if n == 0:
        return "none"
    return ("≥" if n >= limit else "") + f"{n:,}"


def fits_panel(planned, width: int) -> Text:
    """The largest batch and sequence that fit each method on this GPU, and the smallest catalogue GPU."""
    from ..solve import KNOB_LIMITS

    fits = planned.fits
    w = planned.plans[0].scenario.workload
    out = Text()
    out.append("What fits" + (f" on {_gpu_name(planned.gpu, width - 13)}" if planned.gpu else "") + "\n", style="bold")
    label_w = 10
    col_w = max(7, (width - label_w) // len(fits))
    if planned.gpu is not None:
        out.append(" " * label_w)
        for f in fits:
            out.append(METHOD_LABELS[f.method].rjust(col_w), style="bold")
        out.append("\n")
        for label, key, limit in (("max batch", "max_batch", KNOB_LIMITS["batch"]),
                                  ("max seq", "max_seq", KNOB_LIMITS["seq"])):
            out.append(label.ljust(label_w))
            for f in fits:
                out.append(_count(getattr(f, key), limit).rjust(col_w))
            out.append("\n")
        out.append(f"at seq {w.seq:,} / at batch {w.batch:,}\n", style="dim")
    else:
        out.append("type a GPU for max batch, seq\n", style="dim")
    out.append("smallest catalogue GPU\n")
    m_w = max(len(METHOD_LABELS[f.method]) for f in fits) + 1
    for f in fits:
        out.append(METHOD_LABELS[f.method].ljust(m_w), style="bold")
        g = f.smallest_gpu
        if g is None:
            out.append("none in the catalogue\n")
            continue
        size = f" ({gib(g.memory_bytes):.0f} GiB)"
        out.append(g.id + (size if m_w + len(g.id) + len(size) <= width else "") + "\n")
    out.rstrip()
    return out


def title(planned, invalid: bool, width: int = 200) -> Text:
    """The top line: model, size, workload, GPU; a warning while a field holds something that cannot be planned.
    Shortened to fit ``width``: the warning always shows."""
    w = planned.plans[0].scenario.workload
    shape, gpu = planned.shape, planned.gpu
    parts = [f"{shape.name}", f"{shape.params / 1e9:.2f}B params", f"seq {w.seq} × batch {w.batch}"]
    if w.gpus > 1:
        parts.append(f"{w.gpus} GPUs ({w.shard}), per GPU")
    if gpu:
        same = gpu.name == f"{gib(gpu.memory_bytes):g} GiB"
        parts.append(gpu.name if same else f"{gpu.name} ({fmt_gib(gpu.memory_bytes)})")
    warning = "  ⚠ last valid plan" if invalid else ""
    text = " " + " · ".join(parts)
    if 10 + len(text) + len(warning) > width:
        parts[1] = f"{shape.params / 1e9:.2f}B"
        if gpu:
            parts[-1] = gpu.id if not gpu.name.endswith("GiB") else gpu.name
        if w.gpus > 1:
            parts[3] = f"{w.gpus}×{w.shard}"
        text = " " + " · ".join(parts)
    room = max(width - 10 - len(warning), 1)
    if len(text) > room:
        text = text[: room - 1] + "…"
    out = Text()
    out.append(" vramplan ", style="bold reverse")
    out.append(text)
    if invalid:
        out.append(warning, style="bold #ff6b6b")
    return out


def command_panel(planned) -> Text:
    """The command line that prints this plan, and the planner's notes."""
    out = Text()
    out.append("Command line (c copies it)\n", style="bold")
    out.append(planned.command_line())
    seen: list[str] = []
    for p in planned.plans:
        for n in p.notes:
            if n not in seen:
                seen.append(n)
    for n in seen:
        out.append("\nnote: " + n, style="dim")
    return out

