"""``vramplan report``: one self-contained HTML page comparing LoRA and QLoRA, a sweep, or predictions
against measurements. Imported only when the command runs (cli.LAZY_COMMANDS)."""

from __future__ import annotations

import click

from .cli import _build, _knobs
from .errors import VramplanError

_KNOB_NAMES = ("method", "seq", "batch", "rank", "alpha", "dropout", "targets", "adapter_dtype", "dtype", "quant",
               "double_quant", "blocksize", "kbit_prep", "optimizer", "grad_ckpt", "attn", "autocast", "gpus",
               "shard", "online")


class ReportUsageError(VramplanError):
    """A report command line that asks for two things at once, or for nothing."""


def _given_knobs(ctx) -> list[str]:
    src = click.core.ParameterSource
    return [f"--{k.replace('_', '-')}" for k in _KNOB_NAMES
            if ctx.get_parameter_source(k) not in (src.DEFAULT, None)]


def _size(n_bytes: int) -> str:
    """File sizes for the 'wrote' line: '4.9 MB', '0.8 kB' (decimal units, as file managers show them)."""
    return f"{n_bytes / 1e6:.1f} MB" if n_bytes >= 1e6 else f"{n_bytes / 1e3:.1f} kB"


def _output(path: str | None) -> str:
    if not path:
        raise ReportUsageError("name the page to write: add -o FILE.html, e.g. -o reports/8b-on-4090.html")
    if not path.lower().endswith((".html", ".htm")):
        raise ReportUsageError(f"-o {path}: a report is an HTML page; name it .html, e.g. -o {path}.html")
    return path


@click.command("report")
@click.argument("inputs", nargs=-1)
@click.option("--gpu", default=None, help="A card (rtx4090, a100-80gb, h100) or a size (24gb = 24 GiB).")
@click.option("--sweep", "sweep_path", default=None, metavar="SCENARIO.yaml",
              help="Report a scenario file's sweep instead of one model.")
@click.option("--measured", is_flag=True,
              help="INPUTS are measurement files (CSV / parquet): report predictions against measurements.")
@click.option("-o", "--output", default=None, metavar="FILE.html", help="The HTML page to write.")
@click.option("--rebuild", is_flag=True, help="Regenerate every report in reports/ (run from the repository root).")
@_knobs
@click.pass_context
def report_cmd(ctx, inputs, gpu, sweep_path, measured, output, rebuild, **kw):
    """Write one self-contained HTML report (plotly.js embedded, opens with no network).

    A model: LoRA vs QLoRA (and full fine-tuning) on a GPU, every component, the step, memory against
    sequence length and batch size, which cards fit. --sweep: a scenario file's grid. --measured: predicted
    against measured, per row and per component.

    Example:

        vramplan report 8b --gpu rtx4090 -o reports/8b-on-4090.html

        vramplan report --sweep scenarios/context-length.yaml -o reports/context.html

        vramplan report --measured scenarios/measured/*.csv -o reports/accuracy.html

        vramplan report --rebuild
    """
    modes = [name for name, on in (("--sweep", sweep_path), ("--measured", measured), ("--rebuild", rebuild)) if on]
    if len(modes) > 1:
        raise ReportUsageError(f"{' and '.join(modes)} ask for different reports; give one of them")
    if modes:
        extra = _given_knobs(ctx) + (["--gpu"] if gpu else [])
        if extra:
            raise ReportUsageError(f"{', '.join(extra)} set a model report's scenario; {modes[0]} reads its "
                                   f"scenarios from files: drop {' '.join(extra)}")

    if rebuild:
        if inputs or output:
            raise ReportUsageError("--rebuild writes every report listed in vramplan/report/rebuild.py into "
                                   "reports/; drop the other arguments")
        from .report.rebuild import rebuild_all

        for path, size in rebuild_all(progress=lambda name: click.echo(f"building {name} ...", err=True)):
            click.echo(f"wrote {path} ({_size(size)})")
        return

    if sweep_path:
        if inputs:
            raise ReportUsageError(f"--sweep takes one scenario file; drop {' '.join(inputs)}")
    elif measured:
        if not inputs:
            raise ReportUsageError("--measured needs measurement files: vramplan report --measured "
                                   "scenarios/measured/*.csv -o reports/accuracy.html")
    elif len(inputs) != 1:
        raise ReportUsageError("give one model: vramplan report 8b --gpu rtx4090 -o report.html "
                               "(or --sweep FILE.yaml, or --measured FILES)")
    out = _output(output)
    from .report.page import write_html

    if sweep_path:
        from .report.build import sweep_report

        report = sweep_report(sweep_path)
    elif measured:
        from .report.build import accuracy_report

        report = accuracy_report(list(inputs))
    else:
        from .report.build import model_report

        kw = dict(kw, dropout_is_default=ctx.get_parameter_source("dropout") == click.core.ParameterSource.DEFAULT)
        _shape, scenarios, gpu_spec = _build(inputs[0], gpu, kw)
        report = model_report(scenarios, gpu=gpu_spec)
    html = report.to_html()
    path = write_html(html, out)
    click.echo(f"wrote {path} ({_size(len(html.encode('utf-8')))})")
    for line in report.summary:
        click.echo(line)
