"""The reports in a real browser: headless Chromium opens each page from a file with the network off, and every
plot must be drawn with no console error, no page error and no request leaving the file.

Uses the system Chromium (Debian's ``chromium`` package, which .ci/run installs) through playwright, never a
downloaded browser. Skipped, with the reason, where no Chromium is installed.
"""

import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("VRAMPLAN_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)),
                                reason=f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
    profile = tempfile.mkdtemp(prefix="vramplan-chromium-")
    with sync_api.sync_playwright() as pw:
        try:
            context = pw.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, args=ARGS,
                                                            headless=True, offline=True,
                                                            viewport={"width": 1200, "height": 900})
        except Exception as exc:  # a Chromium that cannot start here (missing libraries): say why
            shutil.rmtree(profile, ignore_errors=True)
            pytest.skip(f"Chromium at {CHROMIUM} does not start: {str(exc).splitlines()[0]}")
        yield context
        context.close()
    shutil.rmtree(profile, ignore_errors=True)


def open_report(context, path: Path) -> dict:
    """Open a page from its file with every non-file request aborted; return what happened."""
    page = context.new_page()
    seen = {"console": [], "errors": [], "requests": [], "dialogs": []}
    page.on("console", lambda m: seen["console"].append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))
    page.on("dialog", lambda d: (seen["dialogs"].append(d.message), d.dismiss()))

    def route(r):
        if r.request.url.startswith("file://"):
            r.continue_()
        else:
            seen["requests"].append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.goto(path.resolve().as_uri(), wait_until="load")
    try:
        page.wait_for_function("Array.from(document.querySelectorAll('.plot')).every(d => d.querySelector('.main-svg'))",
                               timeout=15_000)
    except Exception as exc:  # not drawn: report it with the errors that explain why
        seen["errors"].append(f"plots not drawn within 15 s ({type(exc).__name__})")
    seen["plots"] = page.evaluate("""() => Array.from(document.querySelectorAll('.plot')).map(d => ({
        id: d.id,
        svg: d.querySelectorAll('.main-svg').length,
        traces: d.querySelectorAll('.trace').length,
        data: (d.data || []).length,
        width: d.getBoundingClientRect().width,
    }))""")
    seen["title"] = page.title()
    page.close()
    return seen


def check(seen, ids):
    assert seen["console"] == [] and seen["errors"] == [], seen
    assert seen["requests"] == [] and seen["dialogs"] == [], seen
    assert [p["id"] for p in seen["plots"]] == ids
    for p in seen["plots"]:
        assert p["svg"] >= 1 and p["data"] > 0 and p["traces"] > 0 and p["width"] > 600, p


def test_hostile_model_name_runs_no_script(browser, tmp_path):
    from vramplan.cli import main

    cfg = resources.files("vramplan").joinpath("catalog", "models", "qwen2.5-0.5b.json").read_text()
    folder = tmp_path / "<img src=x onerror=alert(1)><script>alert(2)<"
    folder.mkdir()
    (folder / "config.json").write_text(cfg)
    out = tmp_path / "hostile.html"
    assert main(["report", str(folder), "--gpu", "8gb", "-o", str(out)]) == 0
    seen = open_report(browser, out)
    check(seen, ["fig-components", "fig-timeline", "fig-seq", "fig-batch"])
    assert seen["title"].endswith("<img src=x onerror=alert(1)><script>alert(2)< on 8 GiB")  # shown as text


def test_accuracy_report_draws_every_plot(browser, tmp_path):
    from vramplan.records import to_frame
    from vramplan.report.build import accuracy_report
    from vramplan.report.page import write_html

    from test_report import _rows

    out = write_html(accuracy_report(["m.csv"], df=to_frame(_rows(oom=True))).to_html(), tmp_path / "acc.html")
    check(open_report(browser, out), ["fig-accuracy", "fig-errors"])


# One committed page of each kind: a model report, a sweep with a numeric axis (a curve), a sweep without one.
# (Every committed page is what the code builds now: tests/test_report.py checks that.)
@pytest.mark.parametrize("name, ids", [
    ("8b-on-4090.html", ["fig-components", "fig-timeline", "fig-seq", "fig-batch"]),
    ("sweep-context-length.html", ["fig-sweep-curve", "fig-sweep-components"]),
    ("sweep-weights-7b.html", ["fig-sweep-components"]),
])
def test_committed_reports_draw_every_plot(browser, name, ids):
    path = ROOT / "reports" / name
    assert path.is_file(), f"reports/{name} is missing; run vramplan report --rebuild"
    seen = open_report(browser, path)
    check(seen, ids)
    assert next(p for p in seen["plots"] if "components" in p["id"])["data"] == 7  # one trace per component
