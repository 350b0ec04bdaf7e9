"""``vramplan trace``: the real training step on fake tensors, and the planner held to it."""

from __future__ import annotations

import json
import sys

import click

from .cli import _build, _knobs


@click.command("trace")
@click.argument("model")
@click.option("--json", "as_json", is_flag=True, help="Print JSON in the shape of `vramplan plan --json`.")
@click.option("--compare", is_flag=True, help="Show the planner's prediction next to the trace, per component and phase.")
@click.option("--real", is_flag=True, help="Real tensors on the CPU instead of fake ones (tiny models only: it allocates).")
@click.option("--layers", type=int, default=None, help="Keep only the first N decoder layers (a small variant).")
@click.option("--out", "out", default=None, help="Append one row per method to a measurement file (.csv or .parquet).")
@_knobs
def trace_cmd(model, as_json, compare, real, layers, out, **kw):
    """Run the real transformers + peft + bitsandbytes step on fake tensors and record live tensor memory.

    No GPU and no weights: the model is built from its config.json, the recipe applied as a training script
    would, and every tensor's allocation and release counted at CUDA's 512-byte granularity.

    Example:

        vramplan trace 8b --seq 4096 --json

        vramplan trace 70b --method qlora --compare
    """
    from .models import load_config, shape_from_config

    ctx = click.get_current_context()
    kw = dict(kw, dropout_is_default=ctx.get_parameter_source("dropout") == click.core.ParameterSource.DEFAULT)
    if kw["gpus"] != 1:
        raise click.UsageError("trace runs one process: leave out --gpus (memory per GPU differs with sharding)")
    shape, scenarios, _ = _build(model, None, kw)
    cfg = load_config(model, online=kw["online"], layers=layers)
    if layers is not None:
        shape = shape_from_config(cfg, name=f"{shape.name} ({layers} layers)", source=shape.source)
        from dataclasses import replace

        scenarios = [replace(s, model=shape) for s in scenarios]
    if real and shape.params > 2_000_000_000:
        raise click.UsageError(f"--real allocates the model in CPU memory; {shape.name} has "
                               f"{shape.params / 1e9:.1f}B parameters: use fake tensors (leave out --real) or --layers")
    from profilers.trace import trace_scenario

    from .plan import plan_scenario

    results = []
    for s in scenarios:
        label = f"{s.recipe.method} {shape.name} seq {s.workload.seq} x batch {s.workload.batch}"

        def say(text, label=label):
            if sys.stderr.isatty() and not as_json:
                click.echo(f"  {label}: {text}", err=True)

        tr = trace_scenario(s, cfg, fake=not real, progress=say)
        results.append((plan_scenario(s), tr))
    if out:
        _record(out, results)
    if as_json:
        click.echo(json.dumps(_json(shape, results, compare), indent=2))
        return
    _table(shape, results, compare)


def _json(shape, results, compare):
    from profilers.compare import compare as cmp

    from .cli import plan_json

    doc = plan_json(shape, [b for b, _ in results], None)
    doc["source"] = "trace"
    doc["plans"] = [t.to_dict() for _, t in results]
    if compare:
        doc["compare"] = [cmp(b, t) for b, t in results]
    return doc


def _record(out, results):
    from profilers.environment import trace_env

    from .records import append_rows, row_from

    rows = []
    for b, t in results:
        measured = {f"meas_{c}": int(t.components.get(c, 0)) for c in
                    ("weights", "quant_constants", "adapters", "gradients", "optimizer", "activations")}
        measured.update(meas_peak_tensor_bytes=int(t.peak_bytes), meas_peak_phase=t.peak_phase)
        rows.append(row_from(b, env=trace_env(fake=t.fake), measured=measured))
    n = append_rows(out, rows)
    click.echo(f"appended {len(rows)} row(s) to {out} ({n} in the file)", err=True)


def _table(shape, results, compare):
    from rich.console import Console
    from rich.table import Table

    from profilers.compare import compare as cmp

    def fmt_gib(n):
        return f"{n / 2**30:.2f}"

    con = Console()
    for b, t in results:
        w = b.scenario.workload
        con.print(f"[bold]{b.method}[/bold] {shape.name}  ·  seq {w.seq} × batch {w.batch}  ·  "
                  f"{'fake' if t.fake else 'real'} tensors, {t.ops} ops, {t.seconds:.1f} s")
        if compare:
            c = cmp(b, t)
            tab = Table("GiB", "predicted", "traced", "diff", "diff %", box=None, pad_edge=False)
            for r in c["components"] + [c["peak"]]:
                tab.add_row(r["item"], fmt_gib(r["predicted_bytes"]), fmt_gib(r["traced_bytes"]),
                            fmt_gib(r["diff_bytes"]), f"{r['diff_pct']:+.2f}")
            for r in c["phases"]:
                tab.add_row(f"  {r['item']} peak", fmt_gib(r["predicted_bytes"]), fmt_gib(r["traced_bytes"]),
                            fmt_gib(r["diff_bytes"]), f"{r['diff_pct']:+.2f}")
            con.print(tab)
            con.print(f"peak phase: predicted {c['peak']['predicted_phase']} ({b.peak_where}), traced "
                      f"{c['peak']['traced_phase']} ({t.peak_where}); not comparable: overhead "
                      f"{fmt_gib(c['not_comparable']['overhead_bytes'])} GiB (not tensors)")
        else:
            tab = Table("GiB", "traced", box=None, pad_edge=False)
            for k, v in t.components.items():
                tab.add_row(k, fmt_gib(v))
            tab.add_row("tensor peak", fmt_gib(t.peak_bytes))
            con.print(tab)
            con.print("timeline: " + "  ".join(f"{p.phase} {fmt_gib(p.peak_bytes)}" for p in t.phases)
                      + f"  (GiB; peak in {t.peak_phase}, at {t.peak_where})")
        for n in t.notes:
            con.print(f"note: {n}")
