"""The report as data (sections of text, tables and figures) and as one self-contained HTML page.

The page embeds plotly.js once, in the head, and every figure's JSON in one ``application/json`` script
block, so it opens from a file with no network. Everything that can come from a user is escaped: text and
table cells with ``html.escape``; the figure JSON has every ``<``, ``>`` and ``&`` written as a ``\\u00XX``
escape, which JSON.parse reads back unchanged and which can never close the script element.
"""

from __future__ import annotations

import html
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..errors import VramplanError

# Marks around the embedded plotly.js, so tests can compare reports without the 4.8 MB library.
PLOTLYJS_BEGIN = "/* plotly.js begin */"
PLOTLYJS_END = "/* plotly.js end */"
PLOT_CONFIG = {"displaylogo": False, "responsive": True, "scrollZoom": False,
               "modeBarButtonsToRemove": ["select2d", "lasso2d"]}


@dataclass(frozen=True)
class Table:
    """Rows of cells; a cell is a string or ``{"text": str, "class": "ok"|"over"|"muted"}``."""

    columns: tuple
    rows: tuple
    caption: str = ""
    numeric: tuple = ()  # indexes of right-aligned columns

    def to_dict(self) -> dict:
        return {"columns": list(self.columns), "rows": [list(r) for r in self.rows], "caption": self.caption,
                "numeric": list(self.numeric)}


@dataclass(frozen=True)
class Plot:
    """One plotly figure dict, drawn into a div with this id."""

    id: str
    figure: dict
    caption: str = ""
    height: int = 460

    def to_dict(self) -> dict:
        return {"id": self.id, "figure": self.figure, "caption": self.caption, "height": self.height}


@dataclass(frozen=True)
class Text:
    """Paragraphs of plain text; ``title`` makes it a small sub-heading."""

    paragraphs: tuple
    title: str = ""

    def to_dict(self) -> dict:
        return {"title": self.title, "paragraphs": list(self.paragraphs)}


@dataclass(frozen=True)
class Pre:
    """Preformatted text (a scenario file as written), shown verbatim."""

    text: str
    caption: str = ""

    def to_dict(self) -> dict:
        return {"text": self.text, "caption": self.caption}


@dataclass(frozen=True)
class Section:
    id: str
    title: str
    blocks: tuple

    def to_dict(self) -> dict:
        return {"id": self.id, "title": self.title,
                "blocks": [{"kind": type(b).__name__.lower(), **b.to_dict()} for b in self.blocks]}


@dataclass(frozen=True)
class Report:
    """A whole report: a title, a one-paragraph summary and sections. ``to_html()`` gives the page.

    Example usage::

        report = vramplan.report.model_report(scenarios, gpu=resolve_gpu("rtx4090"))
        write_html(report.to_html(), "reports/8b-on-4090.html")

    Known Limitations: the page needs a browser with JavaScript for the figures; tables and text read
    without it.
    """

    title: str
    summary: tuple
    sections: tuple
    meta: dict = field(default_factory=dict)

    def plots(self) -> list[Plot]:
        return [b for s in self.sections for b in s.blocks if isinstance(b, Plot)]

    def figures(self) -> dict:
        """Figure id -> plotly figure dict, in page order."""
        return {p.id: p.figure for p in self.plots()}

    def to_dict(self) -> dict:
        return {"title": self.title, "summary": list(self.summary), "meta": self.meta,
                "sections": [s.to_dict() for s in self.sections]}

    def to_html(self, plotlyjs: str | None = None) -> str:
        """The self-contained page. ``plotlyjs`` defaults to the plotly.js bundled with the plotly package."""
        return render(self, plotlyjs)


def plotly_js() -> str:
    """The plotly.js library shipped inside the plotly Python package (no network)."""
    try:
        from plotly.offline import get_plotlyjs
    except ImportError:
        raise VramplanError("reports need plotly: pip install 'plotly>=6,<8' (a dependency of vramplan)") from None
    return get_plotlyjs()


def script_json(obj) -> str:
    """JSON that is safe inside a <script> element: no '<', '>' or '&' appears literally."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def _cell(cell, tag: str, numeric: bool) -> str:
    cls = []
    if isinstance(cell, dict):
        text = cell["text"]
        if cell.get("class"):
            cls.append(cell["class"])
    else:
        text = cell
    if numeric:
        cls.append("num")
    attr = f' class="{" ".join(html.escape(c) for c in cls)}"' if cls else ""
    return f"<{tag}{attr}>{html.escape(str(text))}</{tag}>"


def _table(t: Table) -> str:
    out = ['<div class="table-wrap"><table>']
    if t.caption:
        out.append(f"<caption>{html.escape(t.caption)}</caption>")
    if any(str(c) for c in t.columns):
        out.append("<thead><tr>" + "".join(_cell(c, "th", i in t.numeric) for i, c in enumerate(t.columns))
                   + "</tr></thead>")
    out.append("<tbody>")
    for row in t.rows:
        out.append("<tr>" + "".join(_cell(c, "td", i in t.numeric) for i, c in enumerate(row)) + "</tr>")
    out.append("</tbody></table></div>")
    return "\n".join(out)


def _block(b) -> str:
    if isinstance(b, Text):
        head = f"<h3>{html.escape(b.title)}</h3>\n" if b.title else ""
        return head + "\n".join(f"<p>{html.escape(p)}</p>" for p in b.paragraphs)
    if isinstance(b, Table):
        return _table(b)
    if isinstance(b, Pre):
        cap = f'<div class="caption">{html.escape(b.caption)}</div>' if b.caption else ""
        return f"{cap}<pre>{html.escape(b.text)}</pre>"
    if isinstance(b, Plot):
        cap = f'<figcaption>{html.escape(b.caption)}</figcaption>' if b.caption else ""
        return (f'<figure><div id="{html.escape(b.id)}" class="plot" style="height:{int(b.height)}px"></div>'
                f"{cap}</figure>")
    raise TypeError(f"not a report block: {b!r}")


_CSS = """
:root { --fg: #1d1d1f; --muted: #666; --line: #ddd; --ok: #1a7f37; --over: #b42318; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fafafa;
       font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 28px 48px; background: white; }
h1 { font-size: 26px; margin: 8px 0 4px; }
h2 { font-size: 20px; margin: 36px 0 8px; padding-top: 12px; border-top: 1px solid var(--line); }
h3 { font-size: 16px; margin: 18px 0 4px; }
p { margin: 6px 0 10px; max-width: 78ch; }
.summary p { font-size: 16px; }
nav { font-size: 14px; margin: 8px 0 0; }
nav a { margin-right: 14px; color: #0b57d0; text-decoration: none; }
.table-wrap { overflow-x: auto; margin: 10px 0 18px; }
table { border-collapse: collapse; font-size: 14px; }
caption { text-align: left; color: var(--muted); padding: 4px 0; caption-side: top; }
th, td { padding: 4px 8px; border-bottom: 1px solid var(--line); text-align: left; white-space: nowrap; }
th { background: #f3f3f3; font-weight: 600; white-space: normal; vertical-align: bottom; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.ok { color: var(--ok); font-weight: 600; }
td.over { color: var(--over); font-weight: 600; }
td.muted { color: var(--muted); }
figure { margin: 12px 0 24px; }
pre { background: #f6f8fa; border: 1px solid var(--line); padding: 10px 12px; overflow-x: auto; font-size: 13px;
      line-height: 1.4; }
.caption { color: var(--muted); font-size: 14px; margin-top: 10px; }
figcaption { color: var(--muted); font-size: 13px; max-width: 90ch; }
.plot { width: 100%; }
footer { margin-top: 40px; color: var(--muted); font-size: 13px; border-top: 1px solid var(--line); padding-top: 8px; }
@media print { body { background: white; } main { max-width: none; } }
"""

_DRAW = """
(function () {
  var figs = JSON.parse(document.getElementById("vramplan-figures").textContent);
  var config = JSON.parse(document.getElementById("vramplan-plot-config").textContent);
  Object.keys(figs).forEach(function (id) {
    Plotly.newPlot(id, figs[id].data, figs[id].layout, config);
  });
})();
"""


def render(report: Report, plotlyjs: str | None = None) -> str:
    """The report as one HTML page: plotly.js once in the head, figure JSON once at the end."""
    js = plotly_js() if plotlyjs is None else plotlyjs
    nav = " ".join(f'<a href="#{html.escape(s.id)}">{html.escape(s.title)}</a>' for s in report.sections)
    body = []
    for s in report.sections:
        body.append(f'<section id="{html.escape(s.id)}">\n<h2>{html.escape(s.title)}</h2>')
        body.extend(_block(b) for b in s.blocks)
        body.append("</section>")
    summary = "\n".join(f"<p>{html.escape(p)}</p>" for p in report.summary)
    figures = {p.id: p.figure for p in report.plots()}
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta name="generator" content="vramplan {html.escape(__version__)}">',
        f"<title>{html.escape(report.title)}</title>",
        f"<style>{_CSS}</style>",
        f'<script type="text/javascript">{PLOTLYJS_BEGIN}\n{js}\n{PLOTLYJS_END}</script>',
        "</head>",
        "<body>",
        "<main>",
        f"<header>\n<h1>{html.escape(report.title)}</h1>",
        f'<div class="summary">\n{summary}\n</div>',
        f"<nav>{nav}</nav>\n</header>",
        *body,
        f"<footer>Generated by vramplan {html.escape(__version__)}. Sizes are GiB (1024³ bytes); hover a plot "
        "for exact bytes. The page is self-contained: plotly.js (MIT licence) is embedded and nothing is "
        "loaded from the network.</footer>",
        "</main>",
        f'<script type="application/json" id="vramplan-figures">{script_json(figures)}</script>',
        f'<script type="application/json" id="vramplan-plot-config">{script_json(PLOT_CONFIG)}</script>',
        f"<script>{_DRAW}</script>",
        "</body>",
        "</html>",
        "",
    ])


def strip_plotlyjs(page: str) -> str:
    """The page with the embedded plotly.js replaced by a marker (for comparing reports across plotly versions)."""
    start = page.find(PLOTLYJS_BEGIN)
    end = page.find(PLOTLYJS_END)
    if start < 0 or end < start:
        return page
    return page[: start + len(PLOTLYJS_BEGIN)] + "\n" + page[end:]


def write_html(text: str, path) -> Path:
    """Write the page atomically (a temp file in the same folder, then os.replace); creates the folder."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise VramplanError(f"cannot write {path}: {exc.strerror}; choose another -o path") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a report is for sharing
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise VramplanError(f"cannot write {path}: {exc.strerror}; choose another -o path") from None
        raise
    return path
