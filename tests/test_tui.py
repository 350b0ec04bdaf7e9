"""The terminal UI: knobs -> plans like the CLI, pictures that read without colour, behaviour (Pilot) and
the main screen (SVG snapshots at 80x24 and 120x40; update with ``pytest --snapshot-update``)."""

import asyncio
import functools
import json
import subprocess
import sys

import pytest
from rich.console import Console

from vramplan.cli import _build, main
from vramplan.errors import VramplanError
from vramplan.gpus import resolve_gpu
from vramplan.models import load_model
from vramplan.plan import COMPONENTS, plan_scenario
from vramplan.solve import max_fit, smallest_gpu
from vramplan.tui import render
from vramplan.tui.state import DEFAULT_KW, FieldErrors, Session, export_json, scenarios_for
from vramplan.units import GiB


def plain(renderable, width: int) -> str:
    """A rich renderable as text without colour, trailing spaces dropped."""
    con = Console(width=width, color_system=None, file=None, record=True, legacy_windows=False)
    with con.capture() as cap:
        con.print(renderable)
    return "\n".join(line.rstrip() for line in cap.get().splitlines())


def planned(model="7b", gpu="24gb", **fields):
    s = Session()
    values = s.initial_values(model, gpu)
    values.update(fields)
    return s.plan(values)


# --- knobs -> plans, exactly as the CLI --------------------------------------------------------------------
@pytest.mark.parametrize("model, gpu, changes", [
    ("7b", "24gb", {}),
    ("8b", "rtx4090", {"seq": 4096, "batch": 2, "rank": 64, "optimizer": "paged_adamw_8bit", "grad_ckpt": False}),
    ("47b", "h100", {"attn": "eager", "double_quant": False, "kbit_prep": False}),  # MoE: dropout default -> 0
    ("2b", None, {"targets": "q_proj,v_proj", "method": "qlora"}),
])
def test_scenarios_are_the_cli_scenarios(model, gpu, changes):
    kw = {**DEFAULT_KW, **changes}
    _, cli_scenarios, _ = _build(model, gpu, kw)
    mine = scenarios_for(load_model(model), resolve_gpu(gpu) if gpu else None, kw)
    assert mine == cli_scenarios


def test_command_line_reproduces_the_screen(capsys):
    p = planned("8b", "rtx4090", seq="4096", batch="2", rank="64", targets="q_proj,v_proj",
                optimizer="adamw_8bit", attn="eager", grad_ckpt=False, double_quant=False, kbit_prep=False)
    cmd = p.command_line()
    assert cmd == ("vramplan plan 8b --gpu rtx4090 --seq 4096 --batch 2 --rank 64 --targets q_proj,v_proj "
                   "--no-double-quant --no-kbit-prep --optimizer adamw_8bit --no-grad-ckpt --attn eager")
    code = main(cmd.split()[1:] + ["--json"])
    out = capsys.readouterr().out
    assert code == 0 and json.loads(out) == p.to_json()
    assert planned().command_line() == "vramplan plan 7b --gpu 24gb"


def test_field_errors_name_their_fields():
    with pytest.raises(FieldErrors) as exc:
        planned(seq="abc", batch="0", gpu="24xb", rank="5000")
    errors = exc.value.errors
    assert set(errors) == {"seq", "batch", "gpu", "rank"}
    assert errors["seq"] == "'abc' is not a whole number; type e.g. 2048"
    assert errors["batch"].startswith("--batch 0: use a micro-batch from 1 to 65536")
    assert errors["gpu"].startswith("unknown GPU '24xb': use a size such as 24gb")
    assert errors["rank"].startswith("--rank 5000: use a rank from 1 to 4096")
    with pytest.raises(FieldErrors) as exc:
        planned(targets="q_proj,foo_proj")
    assert list(exc.value.errors) == ["targets"] and "unknown target module foo_proj" in exc.value.errors["targets"]
    with pytest.raises(FieldErrors) as exc:
        planned(model="nosuchmodel")
    assert exc.value.errors["model"].startswith("unknown model 'nosuchmodel'")
    assert isinstance(exc.value, VramplanError)


def test_what_fits_is_the_solver_answer():
    p = planned("7b", "24gb")
    for fits, plan in zip(p.fits, p.plans):
        s = plan.scenario
        assert fits.max_batch == max_fit(s, "batch") and fits.max_seq == max_fit(s, "seq")
        assert fits.smallest_gpu == smallest_gpu(s)
        # the answers sit exactly on the capacity line
        assert plan_scenario(s.with_(batch=fits.max_batch)).peak_bytes <= 24 * GiB
        assert plan_scenario(s.with_(batch=fits.max_batch + 1)).peak_bytes > 24 * GiB
    text = plain(render.fits_panel(p, 30), 30)
    lora, qlora = p.fits
    assert f"max batch {lora.max_batch:>10}{qlora.max_batch:>10}" in text
    assert f"max seq   {lora.max_seq:>10,}{qlora.max_seq:>10,}" in text
    assert f"LoRA  {lora.smallest_gpu.id} (" in text
    no_gpu = planned("7b", "")
    assert all(f.max_batch is None and f.max_seq is None for f in no_gpu.fits)
    assert "type a GPU for max batch, seq" in plain(render.fits_panel(no_gpu, 30), 30)


def test_export_json_is_the_plan_json(tmp_path, capsys):
    p = planned("8b", "rtx4090", seq="4096")
    path = export_json(p, tmp_path)
    assert path.name == "vramplan_llama-3.1-8b_rtx4090_seq4096_b1.json"
    assert [f.name for f in tmp_path.iterdir()] == [path.name]  # no temporary file left behind
    main(["plan", "8b", "--gpu", "rtx4090", "--seq", "4096", "--json"])
    assert json.loads(path.read_text()) == json.loads(capsys.readouterr().out)
    with pytest.raises(VramplanError, match="cannot write"):
        export_json(p, tmp_path / "missing-folder")


# --- pictures without colour -------------------------------------------------------------------------------
def test_bar_cells_and_capacity_line():
    assert render._cells([1, 1, 2], 4, 8) == [2, 2, 4]
    assert render._cells([1, 1, 1], 3, 10) == [4, 3, 3]  # largest remainder: the bar is exactly 10 cells
    comps = dict.fromkeys(COMPONENTS, 0)
    comps.update(weights=20 * GiB, activations=10 * GiB)  # 30 GiB on a 24 GiB card: over
    bar = render.stacked_bar(comps, scale=30 * GiB, width=30, capacity=24 * GiB).plain
    assert bar == "█" * 20 + "▞" * 4 + "┃" + "▞" * 6
    comps.update(weights=6 * GiB, activations=6 * GiB)  # fits: blanks up to the capacity line
    bar = render.stacked_bar(comps, scale=24 * GiB, width=24, capacity=24 * GiB).plain
    assert bar == "█" * 6 + "▞" * 6 + " " * 12 + "┃"


def test_bars_panel_reads_without_colour():
    p = planned("7b", "24gb")
    lora, qlora = p.plans
    text = plain(render.bars(p, 60), 60)
    lines = text.splitlines()
    assert lines[0] == "Peak memory per GPU vs 24 GiB"
    assert lines[1].startswith("LoRA  █") and lines[1].endswith("┃") and len(lines[1]) == 60
    assert f"✓ fits, {(24 * GiB - lora.peak_bytes) / GiB:.2f} GiB to spare · peak {lora.peak_bytes / GiB:.2f} GiB" \
           f" in {lora.peak_phase}" in text
    assert f"✓ fits, {(24 * GiB - qlora.peak_bytes) / GiB:.2f} GiB to spare" in text
    # the bar's cells are the components in proportion: weights cells = round(weights / 24 GiB * 53)
    assert lines[1].count("█") == render._cells([lora.components[c] for c in COMPONENTS], 24 * GiB, 53)[0]
    for char, label, _ in render.SEGMENTS.values():
        assert f"{char} {label}" in text
    over = planned("7b", "12gb")
    assert f"✗ OVER by {(over.plans[0].peak_bytes - 12 * GiB) / GiB:.2f} GiB" in plain(render.bars(over, 60), 60)


def test_timeline_lists_every_phase_and_marks_the_peak():
    p = planned("8b", "24gb")
    text = plain(render.timeline(p, 70), 70)
    rows = text.splitlines()[2:]
    assert [r.split()[0] for r in rows] == ["load", "forward", "loss", "backward", "optimizer"]
    for k, row in enumerate(rows):
        for plan in p.plans:
            ph = plan.phases[k]
            mark = "*" if ph.name == plan.peak_phase else ""
            assert f"{ph.device_bytes / GiB:.2f}{mark}" in row
    assert sum(r.count("*") for r in rows) == 2  # one peak per method


def test_component_table_bytes_gib_share():
    p = planned("7b", "24gb")
    lora = p.plans[0]
    for width, tables in ((120, 1), (50, 2)):
        text = plain(render.component_table(p, width), width)
        assert text.count("component") == tables
        for c in COMPONENTS:
            v = lora.components[c]
            assert f"{v:,}" in text and f"{100 * v / lora.peak_bytes:.1f}%" in text
        assert f"{lora.peak_bytes:,}" in text


# --- the app (Pilot) ---------------------------------------------------------------------------------------
def app(**kw):
    from vramplan.tui.app import VramplanApp

    return VramplanApp(kw.pop("model", "7b"), kw.pop("gpu", "24gb"), kw.pop("knobs", None), **kw)


def pilot_test(coro):
    """Run an async Pilot test with asyncio (no async pytest plugin needed)."""

    @functools.wraps(coro)
    def run(*args, **kwargs):
        asyncio.run(coro(*args, **kwargs))

    return run


def verdicts(a) -> list[bool]:
    return [p.fits for p in a.planned.plans]


@pilot_test
async def test_changing_seq_changes_the_verdict():
    a = app()
    async with a.run_test(size=(80, 24)) as pilot:
        assert verdicts(a) == [True, True]
        await pilot.press("s", *"32768", "enter")
        assert a.planned.kw["seq"] == 32768
        assert verdicts(a) == [False, False]
        bars = plain(render.bars(a.planned, 50), 50)
        assert bars.count("✗ OVER by") == 2
        assert "seq 32768 × batch 1" in render.title(a.planned, False).plain
        assert a.focused.id == "results"  # Enter leaves the field; single keys work again


@pilot_test
async def test_changing_gpu_changes_the_verdict():
    a = app()
    async with a.run_test(size=(80, 24)) as pilot:
        await pilot.press("g", *"rtx3080")
        assert a.planned.gpu.id == "rtx3080"
        assert verdicts(a) == [False, True]  # 10 GiB: LoRA no longer fits, QLoRA does
        await pilot.pause()
        fits = a.query_one("#fits")
        assert fits.planned is a.planned  # "what fits" follows right after the repaint
        lora, qlora = a.planned.fits
        assert lora.max_batch == 0 and qlora.max_batch == max_fit(a.planned.plans[1].scenario, "batch") > 0
        assert "max batch      none" in fits.render().plain
        ckpt = a.query_one("#f-grad_ckpt")
        assert ckpt.render().plain == "▐X▌ grad checkpointing "
        await pilot.press("escape", "k")  # no checkpointing: QLoRA no longer fits either
        assert a.planned.kw["grad_ckpt"] is False and verdicts(a) == [False, False]
        assert ckpt.render().plain == "▐ ▌ grad checkpointing "  # off reads as a blank box, colour or not
        assert "--no-grad-ckpt" in a.planned.command_line()


@pilot_test
async def test_invalid_input_shows_inline_and_keeps_the_last_plan():
    from textual.widgets import Static

    a = app()
    async with a.run_test(size=(80, 24)) as pilot:
        await pilot.press("s", *"4096")
        good = a.planned
        assert good.kw["seq"] == 4096
        await pilot.press("k")  # typed into the field: "4096k"
        err = a.query_one("#err-seq", Static)
        assert err.display and str(err.render()) == "✗ '4096k' is not a whole number; type e.g. 2048"
        assert a.planned is good  # the last valid plan stays on screen
        assert "⚠ last valid plan" in a.query_one("#title").render().plain
        await pilot.press("escape", "g", *"24xb")
        assert a.query_one("#err-gpu", Static).display and a.planned is good
        assert err.display  # both errors stay until fixed
        await pilot.press("escape", "s", *"1024", "escape", "g", *"80gb")
        assert not err.display and not a.query_one("#err-gpu", Static).display
        assert a.planned.kw["seq"] == 1024 and a.planned.gpu.memory_bytes == 80 * GiB
        assert "⚠ last valid plan" not in a.query_one("#title").render().plain


@pilot_test
async def test_keys_help_export_quit(tmp_path):
    from vramplan.tui.app import HelpScreen

    a = app(export_dir=tmp_path)
    async with a.run_test(size=(80, 24)) as pilot:
        await pilot.press("question_mark")
        assert isinstance(a.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(a.screen, HelpScreen)
        await pilot.press("j")
        written = tmp_path / "vramplan_llama-2-7b_24gb_seq2048_b1.json"
        assert json.loads(written.read_text())["plans"] == a.planned.to_json()["plans"]
        await pilot.press("q")
    assert a.return_code == 0 and not a.is_running


@pilot_test
async def test_html_report_key(tmp_path):
    from vramplan.tui.state import report_available

    if not report_available():
        pytest.skip("the HTML report builder (vramplan.report) is not in this checkout")
    a = app(export_dir=tmp_path)
    async with a.run_test(size=(80, 24)) as pilot:
        assert a.check_action("export_html", ()) is True
        await pilot.press("h")
        await a.workers.wait_for_complete()
        await pilot.pause()
        peaks = [p.peak_bytes for p in a.planned.plans]
    html = (tmp_path / "vramplan_llama-2-7b_24gb_seq2048_b1.html").read_text(encoding="utf-8")
    assert html.lstrip().lower().startswith("<!doctype html") and "<title>llama-2-7b on" in html
    assert all(str(peak) in html for peak in peaks)  # the report is about the plan on the screen


@pilot_test
async def test_no_html_key_without_the_report_builder(tmp_path, monkeypatch):
    import vramplan.tui.app as tui_app

    monkeypatch.setattr(tui_app, "report_available", lambda: False)
    a = app(export_dir=tmp_path)
    async with a.run_test(size=(80, 24)) as pilot:
        assert a.check_action("export_html", ()) is False
        await pilot.press("h")
        await pilot.pause()
    assert list(tmp_path.iterdir()) == []


# --- the command line picks the table or the screen --------------------------------------------------------
def test_compare_opens_the_tui_only_on_a_terminal(monkeypatch, capsys):
    import vramplan.tui.app as tui_app

    calls = []
    monkeypatch.setattr(tui_app, "run_app", lambda *a, **k: calls.append((a, k)))
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    assert main(["7b", "--gpu", "24gb", "--seq", "4096"]) == 0
    (model, gpu, kw), extra = calls[0]
    assert (model, gpu, kw["seq"], kw["dropout_is_default"]) == ("7b", "24gb", 4096, True)
    assert capsys.readouterr().out == ""
    assert main(["7b", "--gpu", "24gb", "--no-tui"]) == 0
    assert main(["7b", "--gpu", "24gb", "--json"]) == 0
    assert len(calls) == 1
    out = capsys.readouterr().out
    assert "verdict" in out and '"plans"' in out


def test_the_table_path_imports_no_textual():
    code = ("import sys; from vramplan.cli import main; main(['7b', '--gpu', '24gb']); "
            "sys.stderr.write(repr([m for m in sys.modules if m.startswith('textual')]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stderr.strip() == "[]" and "verdict" in out.stdout


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
@pilot_test
async def test_panels_are_as_tall_as_their_pictures(size):
    """Each panel is measured at the width it is painted at: no blank lines, nothing cut off."""
    a = app()
    async with a.run_test(size=size) as pilot:
        await pilot.pause()
        for sel in ("#bars", "#fits", "#timeline", "#components", "#command"):
            view = a.query_one(sel)
            width = view.content_size.width
            lines = view.draw(width).wrap(Console(width=width), width)
            assert view.content_size.height == len(lines), sel


# --- the main screen ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
def test_main_screen_snapshot(snap_compare, size):
    assert snap_compare(app(), terminal_size=size)


def test_readme_screenshot_is_the_real_screen(tmp_path):
    """docs/tui.svg (shown in the README) is what the app draws today; regenerate it with
    python -c "from vramplan.tui.app import screenshot; screenshot('docs/tui.svg')"."""
    import re
    from pathlib import Path

    from vramplan.tui.app import screenshot

    def normal(svg: str) -> str:
        return re.sub(r"\bterminal-\d+-", "terminal-", svg)

    fresh = screenshot(tmp_path / "tui.svg")
    committed = Path(__file__).resolve().parents[1] / "docs" / "tui.svg"
    assert normal(committed.read_text(encoding="utf-8")) == normal(fresh.read_text(encoding="utf-8"))
