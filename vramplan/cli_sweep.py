"""``vramplan sweep SCENARIO.yaml``: a scenario file's grid as one table (terminal, CSV, parquet, JSON).

Imported only when the command runs (cli.LAZY_COMMANDS); numpy and pandas are imported inside the call.
"""

from __future__ import annotations

import sys

import click

from .errors import VramplanError

# Column headers of the terminal table (the files keep the schema's names).
_HEADERS = {
    "weights_bytes": "weights", "quant_constants_bytes": "quant\nconst", "adapters_bytes": "adapters",
    "gradients_bytes": "grads", "optimizer_bytes": "optim", "activations_bytes": "activ\n+loss",
    "overhead_bytes": "overhead", "peak_bytes": "peak", "peak_reserved_bytes": "torch\nreserved",
    "peak_allocated_bytes": "torch\nallocated", "peak_tensor_bytes": "tensors", "headroom_bytes": "headroom",
    "gpu_memory_bytes": "GPU\nmemory", "trainable_params": "trainable", "peak_phase": "peak in",
    "peak_where": "where", "double_quant": "double\nquant", "kbit_prep": "kbit\nprep", "grad_ckpt": "grad\nckpt",
    "adapter_dtype": "adapter\ndtype", "tokens_per_s": "tokens/s",
}
_METRICS = ("weights_bytes", "quant_constants_bytes", "adapters_bytes", "gradients_bytes", "optimizer_bytes",
            "activations_bytes", "overhead_bytes", "peak_bytes", "peak_phase")


class SweepUsageError(VramplanError):
    """A bad option of the sweep command."""


def default_columns(sf, df) -> list[str]:
    """The varying knobs (file order), the GPU when there are several, components that are not all zero, the
    peak and its phase, and with GPUs fits and headroom."""
    cols = []
    for axis in sf.varying:
        cols.append(axis.name)
    for c in _METRICS:
        if c.endswith("_bytes") and c != "peak_bytes" and len(df) and not df[c].any():
            continue
        cols.append(c)
    if sf.axes["gpu"].given:
        cols += ["fits", "headroom_bytes"]
        if df["tokens_per_s"].notna().any():
            cols.append("tokens_per_s")
    return cols


def _missing(value) -> bool:
    """None, NaN or pandas' NA (an empty cell: no GPU, no speed figure)."""
    import pandas as pd

    return value is None or value is pd.NA or (isinstance(value, float) and value != value)


def _cell(col, value) -> str:
    from .units import gib

    if _missing(value):
        return "-"
    if col.endswith("_bytes"):
        return f"{gib(int(value)):.2f}"
    if col == "params":
        return f"{int(value) / 1e9:.2f}B"
    if col == "trainable_params":
        return f"{int(value) / 1e6:,.1f}M"
    if col == "tokens_per_s":
        return f"{value:,.0f}"
    if col == "fits":
        return "yes" if bool(value) else "NO"
    if isinstance(value, bool) or col in ("double_quant", "kbit_prep", "grad_ckpt", "autocast"):
        return "on" if bool(value) else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def render_sweep(sf, df, columns, limit: int, total_rows: int, file=None) -> None:
    """Print the table: the question, the rows (at most ``limit``), constants and units below."""
    from rich.console import Console
    from rich.table import Table

    out = file or sys.stdout
    # a pipe or file gets the whole width the table needs (rich would squeeze it into 80 columns)
    con = Console(highlight=False, file=file, width=None if out.isatty() else 200)
    con.print(sf.question, style="bold")
    if sf.source:
        con.print(f"source: {sf.source}", style="dim")
    table = Table(show_edge=False, pad_edge=False)
    for c in columns:
        right = c.endswith("_bytes") or c in ("seq", "batch", "rank", "gpus", "tokens", "blocksize", "params",
                                              "trainable_params", "alpha", "dropout", "tokens_per_s")
        table.add_column(_HEADERS.get(c, c), justify="right" if right else "left", no_wrap=c.endswith("_bytes"))
    shown = df.head(limit)
    records = shown[columns].itertuples(index=False, name=None)
    for rec in records:
        style = None
        if "fits" in columns:
            fit = rec[columns.index("fits")]
            style = None if _missing(fit) or bool(fit) else "red"
        table.add_row(*(_cell(c, v) for c, v in zip(columns, rec)), style=style)
    con.print(table)
    if len(df) > limit:
        con.print(f"… {len(df) - limit:,} more rows: --limit {len(df)} shows them, --out sweep.csv writes them",
                  style="dim")
    fixed = []
    for unit in sf.units:
        for name in unit:
            a = sf.axes[name]
            if a.given and len(a.values) == 1 and name not in columns:
                v = a.values[0]
                if name == "model":
                    v = sf.models[v].name
                elif name == "gpu":
                    g = sf.gpus[v]
                    v = f"{g.id} ({g.memory_bytes / 2**30:.2f} GiB)"
                fixed.append(f"{name} {_cell(name, v)}")
    if fixed:
        con.print("with " + ", ".join(fixed) + "; other knobs at the CLI defaults", style="dim")
    unit_note = "sizes in GiB (1024³ B)"
    if (df["gpus"] > 1).any() if len(df) else False:
        unit_note += ", per GPU"
    con.print(f"{unit_note}; {len(df):,} of {total_rows:,} rows" if len(df) != total_rows
              else f"{unit_note}; {total_rows:,} rows", style="dim")


def _progress_callback(sf):
    """A rich progress bar on stderr for grids of many groups on a terminal; None otherwise."""
    if not sys.stderr.isatty():
        return None, None
    from .sweep import count_groups

    total = count_groups(sf)
    if total <= 4:
        return None, None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn("planning groups"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=Console(stderr=True), transient=True)
    task = progress.add_task("sweep", total=total)

    def update(done, total_):
        progress.update(task, completed=done, total=total_)

    return progress, update


@click.command("sweep")
@click.argument("scenario", type=click.Path(dir_okay=False))
@click.option("--out", "out", default=None, metavar="PATH",
              help="Write every row to PATH; the suffix picks the format: .csv, .parquet or .json (records).")
@click.option("--json", "as_json", is_flag=True, help="Print every row as JSON records (integer bytes).")
@click.option("--columns", default=None, metavar="A,B,...",
              help="Columns of the terminal table (schema names, e.g. seq,peak_bytes,fits).")
@click.option("--limit", type=int, default=100, show_default=True, help="Rows shown in the terminal table.")
def sweep_cmd(scenario, out, as_json, columns, limit):
    """A scenario file's grid of models x GPUs x knobs as one table: every component, the three peaks, fits.

    Lists in the file are axes (cartesian product; zip: pairs them). Columns, one row per scenario and GPU:
    the knobs, tokens, gpu, gpu_memory_bytes, params, trainable_params, the seven components as
    <component>_bytes (weights, quant_constants, adapters, gradients, optimizer, activations, overhead),
    peak_bytes, peak_reserved_bytes, peak_allocated_bytes, peak_tensor_bytes, peak_phase, peak_where, fits,
    headroom_bytes, tokens_per_s. Ctrl-C keeps the finished rows (and writes them to --out).

    Example:

        vramplan sweep scenarios/context-length.yaml

        vramplan sweep scenarios/context-length.yaml --out ctx.parquet
    """
    from .scenario_file import load_scenario_file
    from .sweep import COLUMNS, run_sweep, to_json_records, write

    if limit < 1:
        raise SweepUsageError(f"--limit {limit}: show at least one row, e.g. --limit 50")
    cols = None
    if columns is not None:
        cols = [c.strip() for c in columns.split(",") if c.strip()]
        bad = [c for c in cols if c not in COLUMNS]
        if bad or not cols:
            raise SweepUsageError(f"--columns {columns}: {', '.join(bad) or 'no column'} is not a sweep column; "
                                  f"use names such as seq,peak_bytes,fits (vramplan sweep --help lists them)")
    if out is not None:
        _check_out(out)
    sf = load_scenario_file(scenario)
    progress, update = (None, None) if as_json else _progress_callback(sf)
    if progress is not None:
        with progress:
            result = run_sweep(sf, progress=update)
    else:
        result = run_sweep(sf)
    df = result.df
    if out is not None:
        write(df, out)
    if result.interrupted:
        where = f" in {out}" if out is not None else ""
        click.echo(f"vramplan: sweep interrupted: kept {len(df):,} of {result.total_rows:,} rows "
                   f"({result.groups_done} of {result.groups_total} groups){where}", err=True)
        if as_json:
            click.echo(to_json_records(df))
        raise click.Abort()
    if as_json:
        click.echo(to_json_records(df))
        return
    if out is not None:
        click.echo(f"wrote {len(df):,} rows x {len(df.columns)} columns to {out}")
        return
    render_sweep(sf, df, cols or list(sf.columns or default_columns(sf, df)), limit, result.total_rows)


def _check_out(out: str) -> None:
    from pathlib import Path

    from .sweep import FORMATS, SweepOutputError

    p = Path(out)
    if p.suffix.lower() not in FORMATS:
        raise SweepOutputError(f"--out {out}: the format comes from the suffix; use .csv, .parquet or .json, "
                               f"e.g. --out {p.stem or 'sweep'}.parquet")
    if p.is_dir():
        raise SweepOutputError(f"--out {out} is a folder; name a file such as {out.rstrip('/')}/sweep.csv")
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir():
        raise SweepOutputError(f"--out {out}: folder {folder} does not exist; create it or pick another path")
