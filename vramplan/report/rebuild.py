"""The reports in ``reports/``: which ones exist, how each is built, and one command to rebuild them all.

    vramplan report --rebuild        (or: python -m vramplan.report.rebuild), from the repository root

Model reports are listed here. Every committed scenario file ``scenarios/*.yaml`` gets a sweep report
``reports/sweep-<name>.html``, and the committed measurements ``scenarios/measured/*.csv|parquet`` (when
there are any) the accuracy report ``reports/accuracy.html``. ``tests/test_report.py`` rebuilds each in
memory and checks the committed page is identical apart from the embedded plotly.js library.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import VramplanError
from .page import strip_plotlyjs, write_html

REPORTS_DIR = "reports"
SCENARIOS_DIR = "scenarios"
MEASURED_DIR = "scenarios/measured"


@dataclass(frozen=True)
class ModelReport:
    """A model report: the arguments of ``vramplan report MODEL --gpu GPU [knobs]``."""

    name: str
    model: str
    gpu: str
    knobs: tuple = ()  # (("seq", 8192), ...)

    def command(self) -> str:
        extra = "".join(f" --{k.replace('_', '-')} {v}" for k, v in self.knobs)
        return f"vramplan report {self.model} --gpu {self.gpu}{extra} -o {REPORTS_DIR}/{self.name}"


MODEL_REPORTS = (
    # The question this tool exists for: does an 8B model fine-tune on a 24 GB card, with LoRA and with QLoRA?
    ModelReport("8b-on-4090.html", "8b", "rtx4090"),
    # Where QLoRA is the only option on one card: a 70B model on an 80 GB H100.
    ModelReport("70b-on-h100.html", "70b", "h100"),
)


def _model_report(entry: ModelReport):
    from ..cli import _build
    from .build import model_report

    kw = dict(method="both", seq=2048, batch=1, rank=16, alpha=32.0, dropout=0.05, targets="all-linear",
              adapter_dtype="fp32", dtype="bf16", quant="nf4", double_quant=True, blocksize=64, kbit_prep=True,
              optimizer=None, grad_ckpt=True, attn="sdpa", autocast=True, gpus=1, shard="none", online=False,
              dropout_is_default=True)
    kw.update(dict(entry.knobs))
    _shape, scenarios, gpu = _build(entry.model, entry.gpu, kw)
    return model_report(scenarios, gpu=gpu)


def planned(root: Path | str = ".") -> list[tuple[str, str, object]]:
    """Every report ``reports/`` should hold: (file name, the command that makes it, a builder of its Report)."""
    root = Path(root)
    out = []
    for entry in MODEL_REPORTS:
        out.append((entry.name, entry.command(), lambda e=entry: _model_report(e)))
    scen = root / SCENARIOS_DIR
    for path in sorted(scen.glob("*.yaml")) if scen.is_dir() else []:
        rel = path.relative_to(root).as_posix()
        name = f"sweep-{path.stem}.html"

        def build(p=path, label=rel):
            from .build import sweep_report

            return sweep_report(p, label=label)

        out.append((name, f"vramplan report --sweep {rel} -o {REPORTS_DIR}/{name}", build))
    meas = root / MEASURED_DIR
    files = sorted(p for ext in ("*.csv", "*.parquet") for p in meas.glob(ext)) if meas.is_dir() else []
    if files:
        from ..records import read_records

        df = read_records(files)
        if len(df[df["status"] == "ok"]):
            rels = " ".join(p.relative_to(root).as_posix() for p in files)

            def build_acc(fs=tuple(files), frame=df):
                from .build import accuracy_report

                return accuracy_report(list(fs), df=frame)

            out.append(("accuracy.html", f"vramplan report --measured {rels} -o {REPORTS_DIR}/accuracy.html",
                        build_acc))
    return out


def index_markdown(built) -> str:
    """reports/README.md: every report with its title and the command that makes it."""
    lines = [
        "# Reports",
        "",
        "Self-contained HTML pages (plotly.js embedded: they open from a file with no network), generated from",
        "the committed scenarios and measurements. Do not edit them by hand: rebuild them all from the repository",
        "root with",
        "",
        "```",
        "vramplan report --rebuild",
        "```",
        "",
        "`tests/test_report.py` checks that every page here is what the code builds now.",
        "",
        "| report | what it shows | command |",
        "|---|---|---|",
    ]
    for name, command, report in built:
        what = report.summary[0] if report.meta.get("kind") == "sweep" else report.title
        what = what.replace("|", "\\|")
        lines.append(f"| [{name}]({name}) | {what} | `{command}` |")
    if not any(name == "accuracy.html" for name, _, _ in built):
        lines += ["", f"No accuracy report yet: `{MEASURED_DIR}/` holds no completed measurement row. Once it "
                      "does, `--rebuild` adds `accuracy.html` (predicted against measured)."]
    return "\n".join(lines) + "\n"


def rebuild_all(root: Path | str = ".", *, progress=None):
    """Write every planned report and the index into ``root/reports``; yields (path, bytes written) as each is
    done."""
    root = Path(root)
    if not (root / "pyproject.toml").is_file() or not (root / "vramplan").is_dir():
        raise VramplanError(f"{root.resolve()} is not the vramplan repository root; run --rebuild from the "
                            "folder that holds pyproject.toml and reports/")
    built = []
    for name, command, build in planned(root):
        if progress:
            progress(name)
        report = build()
        html = report.to_html()
        path = write_html(html, root / REPORTS_DIR / name)
        built.append((name, command, report))
        yield path, len(html.encode("utf-8"))
    text = index_markdown(built)
    path = write_html(text, root / REPORTS_DIR / "README.md")
    yield path, len(text.encode("utf-8"))


def stale(root: Path | str = ".") -> list[str]:
    """Names of planned reports that are missing or differ from what the code builds now (plotly.js aside),
    of pages in reports/ that no entry builds, and the index if it is out of date."""
    root = Path(root)
    out = []
    built = []
    for name, command, build in planned(root):
        report = build()
        built.append((name, command, report))
        path = root / REPORTS_DIR / name
        if not path.is_file():
            out.append(f"{name} (missing)")
            continue
        want = strip_plotlyjs(report.to_html(plotlyjs=""))
        have = strip_plotlyjs(path.read_text(encoding="utf-8"))
        if want != have:
            out.append(f"{name} (out of date)")
    folder = root / REPORTS_DIR
    names = {name for name, _, _ in built}
    for path in sorted(folder.glob("*.html")) if folder.is_dir() else []:
        if path.name not in names:
            out.append(f"{path.name} (no longer built)")
    index = folder / "README.md"
    if not index.is_file() or index.read_text(encoding="utf-8") != index_markdown(built):
        out.append("README.md (out of date)")
    return out


def main(argv=None) -> int:
    """``python -m vramplan.report.rebuild``: the same as ``vramplan report --rebuild``."""
    from ..cli import main as cli_main

    return cli_main(["report", "--rebuild", *(argv or [])])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
