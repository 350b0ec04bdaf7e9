"""Rich tables for people: the LoRA vs QLoRA comparison, the catalogues. Bytes become GiB only here."""

from __future__ import annotations

import json

import click

from .plan import COMPONENT_LABELS
from .units import fmt_gib, gib

_METHOD_LABELS = {"lora": "LoRA", "qlora": "QLoRA", "full": "full FT"}


def _console():
    from rich.console import Console

    return Console(highlight=False)


def _num(b: int) -> str:
    return f"{gib(b):.2f}"


def _gpu_label(gpu) -> str:
    if gpu.name == f"{gib(gpu.memory_bytes):g} GiB":
        return f"  ·  {gpu.name} GPU"
    return f"  ·  {gpu.name} ({fmt_gib(gpu.memory_bytes)})"


def verdict(plan) -> str:
    """'fits, 3.21 GiB to spare' / 'over by 1.20 GiB' / 'no GPU given'."""
    if plan.fits is None:
        return "no GPU given"
    if plan.fits:
        return f"fits, {fmt_gib(plan.headroom_bytes)} to spare"
    return f"over by {fmt_gib(-plan.headroom_bytes)}"


def render_comparison(shape, plans, gpu, timeline: bool = False) -> None:
    """Print components per method, the three peaks, the phase of the peak and the verdict."""
    from rich.table import Table

    from .plan import COMPONENTS

    w = plans[0].scenario.workload
    con = _console()
    head = (f"{shape.name}  {shape.params / 1e9:.2f}B params  ·  seq {w.seq} × batch {w.batch}"
            + (f"  ·  {w.gpus} GPUs ({w.shard}), per GPU" if w.gpus > 1 else "")
            + ("  ·  FSDP CPU offload" if w.offload else "")
            + (_gpu_label(gpu) if gpu else ""))
    con.print(head, style="bold")
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("GiB", justify="left")
    for p in plans:
        table.add_column(_METHOD_LABELS[p.method], justify="right")
    for c in COMPONENTS:
        table.add_row(COMPONENT_LABELS[c], *(_num(p.components[c]) for p in plans))
    table.add_section()
    table.add_row("peak (nvidia-smi)", *(_num(p.peak_bytes) for p in plans), style="bold")
    table.add_row("torch max reserved", *(_num(p.peak_reserved_bytes) for p in plans))
    table.add_row("torch max allocated", *(_num(p.peak_allocated_bytes) for p in plans))
    table.add_row("peak falls in", *(p.peak_phase for p in plans))
    table.add_row("", *(p.peak_where for p in plans), style="dim")
    table.add_row("trainable params", *(f"{p.trainable_params / 1e6:,.1f} M" for p in plans))
    if gpu is not None:
        table.add_section()
        table.add_row("verdict", *(verdict(p) for p in plans), style="bold")
    con.print(table)
    if timeline:
        con.print()
        t = Table(show_edge=False, pad_edge=False)
        t.add_column("step timeline (GiB)")
        t.add_column("where")
        for p in plans:
            t.add_column(_METHOD_LABELS[p.method], justify="right")
        for k in range(len(plans[0].phases)):
            t.add_row(plans[0].phases[k].name, plans[-1].phases[k].where,
                      *(_num(p.phases[k].device_bytes) for p in plans))
        con.print(t)
    recipe_lines = []
    for p in plans:
        r = p.scenario.recipe
        bits = [f"{r.dtype}"]
        if r.quantized:
            bits.append(f"{r.quant}{'+dq' if r.double_quant else ''}")
            bits.append("kbit-prep" if r.kbit_prep else "no kbit-prep")
        if r.trains_adapters:
            bits.append(f"r={r.rank} {','.join(r.targets)} {r.adapter_dtype} adapters dropout {r.dropout:g}")
        bits += [r.optimizer, "grad-ckpt" if r.grad_ckpt else "no grad-ckpt", p.detail["attention"]]
        recipe_lines.append(f"{_METHOD_LABELS[p.method]}: " + ", ".join(bits))
    for line in recipe_lines:
        con.print(line, style="dim")
    seen = set()
    for p in plans:
        for n in p.notes:
            if n not in seen:
                seen.add(n)
                con.print(f"note: {n}", style="dim")


def render_models(as_json: bool) -> None:
    """List catalogue models with their shorthands."""
    from .models import SHORTHANDS, catalog_index, load_model

    index = catalog_index()
    rows = []
    for stem in sorted(index):
        shape = load_model(stem)
        short = [k for k, v in SHORTHANDS.items() if v == stem]
        rows.append({"name": stem, "repo": index[stem]["repo"], "shorthands": short, "params": shape.params,
                     "model_type": shape.model_type, "layers": shape.num_layers, "hidden": shape.hidden_size,
                     "vocab": shape.vocab_size})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    t = Table(show_edge=False, pad_edge=False)
    for col in ("name", "shorthand", "Hub repo", "params", "type", "layers", "hidden", "vocab"):
        t.add_column(col, justify="right" if col in ("params", "layers", "hidden", "vocab") else "left")
    for r in rows:
        t.add_row(r["name"], ",".join(r["shorthands"]), r["repo"], f"{r['params'] / 1e9:.2f}B", r["model_type"],
                  str(r["layers"]), str(r["hidden"]), str(r["vocab"]))
    _console().print(t)


def render_gpus(as_json: bool) -> None:
    """List catalogue GPUs."""
    from .gpus import catalog

    cards = catalog()
    if as_json:
        click.echo(json.dumps([
            {"id": g.id, "name": g.name, "memory_bytes": g.memory_bytes, "segment": g.segment,
             "compute_capability": g.compute_capability, "bf16_tflops": g.bf16_tflops,
             "bandwidth_gbps": g.bandwidth_gbps, "price_usd": g.price_usd, "rent_usd_per_hour": g.rent_usd_per_hour}
            for g in cards], indent=2))
        return
    from rich.table import Table

    t = Table(show_edge=False, pad_edge=False)
    for col, right in (("id", False), ("name", False), ("memory", True), ("bf16 TFLOP/s", True),
                       ("GB/s", True), ("price $", True), ("$/hour", True)):
        t.add_column(col, justify="right" if right else "left")
    for g in cards:
        t.add_row(g.id, g.name, fmt_gib(g.memory_bytes), f"{g.bf16_tflops:g}" if g.bf16_tflops else "-",
                  f"{g.bandwidth_gbps:g}" if g.bandwidth_gbps else "-", f"{g.price_usd:,.0f}" if g.price_usd else "-",
                  f"{g.rent_usd_per_hour:.2f}" if g.rent_usd_per_hour else "-")
    _console().print(t)


# --- solvers and GPU advice (vramplan plan --max, vramplan gpus MODEL) ------------------------------------


def render_max(shape, knob: str, results, capacity_bytes: int, step: int, workload) -> None:
    """The largest value of a knob that fits, per method, with the peak there and one step above.

    ``results`` is a list of (method, value, plan at value or None, peak bytes at value + step or None).
    """
    from rich.table import Table

    con = _console()
    w = workload
    fixed = {"seq": f"batch {w.batch}", "batch": f"seq {w.seq}", "rank": f"seq {w.seq} × batch {w.batch}"}
    head = (f"{shape.name}  ·  largest {knob} that fits {fmt_gib(capacity_bytes)}"
            + (f" (multiples of {step})" if step > 1 else "") + f"  ·  {fixed[knob]}"
            + (f"  ·  {w.gpus} GPUs ({w.shard}), per GPU" if w.gpus > 1 else ""))
    con.print(head, style="bold")
    t = Table(show_edge=False, pad_edge=False)
    for col, right in ((f"--max {knob}", False), (knob, True), ("peak GiB", True), ("spare bytes", True),
                       (f"at {knob} + {step}", True)):
        t.add_column(col, justify="right" if right else "left")
    for method, value, plan, above in results:
        label = _METHOD_LABELS[method]
        if value == 0:
            t.add_row(label, "0", "-", "-", f"does not fit even at {knob} {step}")
            continue
        t.add_row(label, f"{value:,}", _num(plan.peak_bytes), f"{plan.headroom_bytes:,}",
                  "-" if above is None else f"over by {above - capacity_bytes:,} B")
    con.print(t)


def _money(x, digits: int = 0) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def _usd(x) -> str:
    """Dollars: cents below $10, whole dollars above."""
    return "-" if x is None else (f"{x:.2f}" if x < 10 else f"{x:,.0f}")


def render_advice(shape, options, *, tokens: int, knobs: str, show_all: bool = False, budget=None) -> None:
    """The `vramplan gpus MODEL` table: one row per card x method, sorted by the recommendation, then why."""
    from rich.table import Table

    from .advise import HEADROOM_FRACTION, _tokens_label

    con = _console()
    fitting = [o for o in options if o.fits]
    missing = [o for o in options if not o.fits]
    con.print(f"{shape.name}  {shape.params / 1e9:.2f}B params  ·  {knobs}  ·  {_tokens_label(tokens)} tokens",
              style="bold")
    t = Table(show_edge=False, pad_edge=False, box=None, header_style="bold", padding=(0, 1, 0, 0))
    cols = (("card", False), ("method", False), ("spare", True), ("max\nbatch", True), ("max\nseq", True),
            ("tok/s", True), ("rent $", True), ("buy $", True), ("pick", False))
    for col, right in cols:
        t.add_column(col, justify="right" if right else "left", no_wrap=True)
    for o in (options if show_all else fitting):
        card = o.gpu.id + (f" ×{o.gpus}" if o.gpus > 1 else "")
        if not o.fits:
            t.add_row(o.gpu.id + f" ×>{o.gpus}", _METHOD_LABELS[o.method], "-", "-", "-", "-", "-", "-", "",
                      style="dim")
            continue
        t.add_row(card, _METHOD_LABELS[o.method], f"{o.headroom_fraction:.0%}", f"{o.max_batch:,}",
                  f"{o.max_seq:,}", _money(o.tokens_per_second), _usd(o.rent_cost_usd), _money(o.purchase_usd),
                  ",".join(o.labels) if o.bf16 else "no bf16", style=None if o.roomy else "dim")
    con.print(t)
    for o in options:
        for label, why in zip(o.labels, o.reasons):
            n = f" ×{o.gpus}" if o.gpus > 1 else ""
            con.print(f"{label}: {o.gpu.name}{n}, {_METHOD_LABELS[o.method]} — {why}")
    if not fitting and budget is not None:
        con.print(f"nothing fits within ${budget:,.0f} of cards: raise --budget, or try --method qlora, a shorter --seq")
    elif not fitting:
        con.print("nothing fits on up to 8 cards of any kind: try --method qlora, a shorter --seq or --rank")
    if missing and not show_all:
        con.print(f"{len(missing)} card × method options do not fit on up to 8 cards (--all lists them).",
                  style="dim")
    con.print(f"×n: cards with FSDP; spare: memory left (≥ {HEADROOM_FRACTION:.0%} to be picked); max batch / seq at "
              f"the other knobs; rent $: renting the cards for {_tokens_label(tokens)} tokens; buy $: the cards. "
              "Speed is a roofline estimate; prices are the catalogue's dated estimates (`vramplan gpus`); "
              "--json / --csv have hours, $ per million tokens and more.", style="dim")


def advice_csv(options) -> str:
    """Every field of every option as CSV (header + one row per card x method)."""
    import csv
    import io

    rows = [o.to_dict() for o in options]
    buf = io.StringIO()
    fields = list(rows[0]) if rows else ["gpu"]
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (";".join(v) if isinstance(v, list) else ("" if v is None else v)) for k, v in r.items()})
    return buf.getvalue()


def gpus_csv() -> str:
    """The GPU catalogue as CSV (the fields of `vramplan gpus --json`)."""
    import csv
    import io

    from .gpus import catalog

    buf = io.StringIO()
    fields = ["id", "name", "memory_bytes", "segment", "compute_capability", "bf16_tflops", "bandwidth_gbps",
              "price_usd", "rent_usd_per_hour"]
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for g in catalog():
        w.writerow({f: ("" if getattr(g, f) is None else getattr(g, f)) for f in fields})
    return buf.getvalue()
