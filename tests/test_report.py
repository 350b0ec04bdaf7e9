"""HTML reports: the figure dicts against the planner, the generated text against hand-checked numbers, the
page (one plotly.js, escaped user text, JSON that cannot close its script), a golden report, the command line,
and the committed reports in reports/ against the code."""

import json
import os
import re
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from vramplan.cli import _build, main
from vramplan.gpus import catalog, resolve_gpu
from vramplan.models import load_model
from vramplan.plan import COMPONENTS, PHASES, plan_scenario
from vramplan.report import figures as F
from vramplan.report import text as T
from vramplan.report.build import accuracy_report, batch_grid, model_report, seq_grid
from vramplan.report.page import (PLOTLYJS_BEGIN, PLOTLYJS_END, Plot, Report, Section, Table, Text, render,
                                  script_json, strip_plotlyjs, write_html)
from vramplan.solve import max_fit
from vramplan.spec import Recipe, Scenario, Workload
from vramplan.units import GiB

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("VRAMPLAN_UPDATE_GOLDEN") == "1"

KW = dict(method="both", seq=2048, batch=1, rank=16, alpha=32.0, dropout=0.05, targets="all-linear",
          adapter_dtype="fp32", dtype="bf16", quant="nf4", double_quant=True, blocksize=64, kbit_prep=True,
          optimizer=None, grad_ckpt=True, attn="sdpa", autocast=True, gpus=1, shard="none", online=False,
          dropout_is_default=True)


def scenarios(model, gpu=None, **knobs):
    return _build(model, gpu, dict(KW, **knobs))[1]


@pytest.fixture(scope="module")
def r8b():
    sc = scenarios("8b", "rtx4090")
    return sc, model_report(sc, gpu=sc[0].gpu)


@pytest.fixture(scope="module")
def small():
    """The golden report: Llama-3.2-1B, sequence 512, on an RTX 3060."""
    sc = scenarios("1b", "rtx3060", seq=512)
    return model_report(sc, gpu=sc[0].gpu)


def plot(report, fig_id):
    return report.figures()[fig_id]


# --------------------------------------------------------------------------------------------------
# figure data


def test_component_bars_sum_to_the_peak(r8b):
    sc, rep = r8b
    fig = plot(rep, "fig-components")
    plans = [plan_scenario(s) for s in sc]
    assert [t["name"] for t in fig["data"]] == [F.COMPONENT_LABELS[c] for c in COMPONENTS]
    assert fig["data"][0]["x"] == ["LoRA", "QLoRA", "full FT"]
    for k, p in enumerate(plans):
        assert sum(t["customdata"][k] for t in fig["data"]) == p.peak_bytes
        for t, c in zip(fig["data"], COMPONENTS):
            assert t["customdata"][k] == p.components[c]
            assert t["y"][k] == round(p.components[c] / GiB, 4)
    # full fine-tuning of Llama-3.1-8B: bf16 weights and gradients, AdamW states in bf16
    weights, grads = fig["data"][0]["customdata"][2], fig["data"][3]["customdata"][2]
    assert grads == 2 * 8_030_261_248
    assert weights == 2 * 8_030_261_248 + 512  # + the fp32 rotary inv_freq buffers, 2 x 64 x 4 B
    (line,) = fig["layout"]["shapes"]
    assert line["y0"] == line["y1"] == round(25_757_220_864 / GiB, 4)  # RTX 4090 as NVML reports it


def test_timeline_phases_sum_to_device_bytes(r8b):
    sc, rep = r8b
    fig = plot(rep, "fig-timeline")
    plans = [plan_scenario(s) for s in sc]
    assert len(fig["data"]) == 2 * len(COMPONENTS)
    for k, p in enumerate(plans):
        axis = "x" if k == 0 else f"x{k + 1}"
        traces = [t for t in fig["data"] if t["xaxis"] == axis]
        assert len(traces) == len(COMPONENTS)
        assert traces[0]["x"] == list(PHASES)
        for i, ph in enumerate(p.phases):
            assert sum(t["customdata"][i][0] for t in traces) == ph.device_bytes
    d1, d2 = fig["layout"]["xaxis"]["domain"], fig["layout"]["xaxis2"]["domain"]
    assert d1[1] < d2[0]
    # the peak bar is the tallest: its total is the plan's peak
    assert max(ph.device_bytes for ph in plans[1].phases) == plans[1].peak_bytes


def test_curves_equal_the_scalar_planner(r8b):
    sc, rep = r8b
    seq_fig, batch_fig = plot(rep, "fig-seq"), plot(rep, "fig-batch")
    assert [t["name"] for t in seq_fig["data"]] == ["LoRA", "QLoRA"]
    assert seq_fig["data"][0]["x"] == seq_grid(2048)
    assert batch_fig["data"][0]["x"] == batch_grid(1) == [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64]
    for fig, knob in ((seq_fig, "seq"), (batch_fig, "batch")):
        for s, trace in zip(sc, fig["data"]):
            for x, b in zip(trace["x"], trace["customdata"]):
                assert b == plan_scenario(s.with_(**{knob: x})).peak_bytes
    # the scenario's own point is on the curve and marked
    assert 2048 in seq_fig["data"][0]["x"]
    assert any(sh.get("x0") == 2048 for sh in seq_fig["layout"]["shapes"])


def test_capacity_lines_group_the_catalogue():
    groups = F.capacity_groups(catalog())
    assert [g["label"] for g in groups] == [
        "10 GiB: rtx3080", "12 GiB: rtx3060", "15–16 GiB: t4, rtx5070ti, rtx5080 +6",
        "22–24 GiB: a10, a10g, l4 +4", "32 GiB: rtx5090, v100-32gb", "40 GiB: a100-40gb, a100-40gb-pcie",
        "45–48 GiB: l40s, rtx6000ada, rtxa6000", "80 GiB: h100, h100-pcie, a100-80gb +1", "96 GiB: rtxpro6000",
        "140 GiB: h200", "179–192 GiB: b200, mi300x"]
    assert sum(len(g["cards"]) for g in groups) == len(catalog()) == 33
    # each line sits at the smallest card of its group: the A10 (22.49 GiB), not the 4090 (23.99 GiB)
    assert groups[3]["memory_bytes"] == resolve_gpu("a10").memory_bytes == 24_146_608_128


def _capacity_labels(fig):
    return [a["text"] for a in fig["layout"]["annotations"] if a.get("yref") == "y"]


def test_curve_shows_capacities_in_range_and_one_either_side(r8b):
    _, rep = r8b
    fig = plot(rep, "fig-seq")
    peaks = [b for t in fig["data"] for b in t["customdata"]]
    assert min(peaks) < 10 * GiB  # QLoRA at 256 tokens: every card's line is in range up to 48 GiB
    assert _capacity_labels(fig) == [
        "10 GiB: rtx3080", "12 GiB: rtx3060", "15–16 GiB: t4, rtx5070ti, rtx5080 +6", "22–24 GiB: a10, a10g, l4 +4",
        "32 GiB: rtx5090, v100-32gb", "40 GiB: a100-40gb, a100-40gb-pcie", "45–48 GiB: l40s, rtx6000ada, rtxa6000",
        "80 GiB: h100, h100-pcie, a100-80gb +1"]  # the last: the whole curve fits an 80 GB card
    lines = [sh["y0"] for sh in fig["layout"]["shapes"] if sh["xref"] == "paper"]
    assert lines == [round(g["memory_bytes"] / GiB, 4) for g in F.capacity_groups(catalog())[:8]]
    assert lines[-1] > round(max(peaks) / GiB, 4) > lines[-2]
    assert fig["layout"]["yaxis"]["type"] == "log"
    # 70B: every point needs more than 45 GiB, so the 45-48 GiB cards are drawn as the line below the curves
    sc = scenarios("70b", "h100")
    fig70 = F.curve_figure("t", "sequence length", [256, 2048, 32768],
                           {s.recipe.method: [plan_scenario(s.with_(seq=n)).peak_bytes for n in (256, 2048, 32768)]
                            for s in sc}, capacities=F.capacity_groups(catalog()), log_x=True)
    assert _capacity_labels(fig70) == ["45–48 GiB: l40s, rtx6000ada, rtxa6000", "80 GiB: h100, h100-pcie, a100-80gb +1",
                                       "96 GiB: rtxpro6000", "140 GiB: h200", "179–192 GiB: b200, mi300x"]


def test_gpu_table_uses_the_solver(r8b):
    sc, rep = r8b
    (table,) = [b for s in rep.sections if s.id == "gpus" for b in s.blocks if isinstance(b, Table)]
    assert table.columns == ("GPU", "GiB", "LoRA GiB", "LoRA max batch", "LoRA max seq", "QLoRA GiB",
                             "QLoRA max batch", "QLoRA max seq")
    assert len(table.rows) == 33
    row = next(r for r in table.rows if r[0] == "NVIDIA GeForce RTX 4090")
    lora, qlora = (s.with_() for s in sc)
    for s, (verdict, batch, seq) in ((lora, row[2:5]), (qlora, row[5:8])):
        b = max_fit(s, "batch")
        n = max_fit(s, "seq")
        assert (batch, seq) == (f"{b:,}", f"{n:,}")
        # largest: the next value does not fit
        assert plan_scenario(s.with_(seq=n)).peak_bytes <= s.gpu.memory_bytes < plan_scenario(s.with_(seq=n + 1)).peak_bytes
        assert plan_scenario(s.with_(batch=b + 1)).peak_bytes > s.gpu.memory_bytes
        assert verdict["class"] == "ok"
    t4 = next(r for r in table.rows if r[0] == "Tesla T4")
    assert t4[2] == {"text": f"over by {(plan_scenario(lora).peak_bytes - 16_106_127_360) / GiB:.2f}", "class": "over"}
    assert t4[3] == {"text": "—", "class": "muted"}  # nothing fits: no batch size to offer
    # AMD cards name a gfx target, not a compute capability: planned without sm90 workspaces
    assert any(r[0] == "AMD Instinct MI300X" and r[2]["class"] == "ok" for r in table.rows)


# --------------------------------------------------------------------------------------------------
# generated explanations


def _paras(report, heading):
    sec = next(s for s in report.sections if s.id == "explained")
    return " ".join(p for b in sec.blocks if b.title == heading for p in b.paragraphs)


def test_explanations_state_the_report_numbers(r8b):
    _, rep = r8b
    nf4 = _paras(rep, "Base weights and NF4")
    # Llama-3.1-8B: 224 quantized linears, 6,979,321,856 parameters, two 4-bit codes per byte
    assert "QLoRA stores the 6.98 B parameters of the quantized linear layers (86.9 % of the model) in NF4" in nf4
    assert f"two 4-bit codes per byte: {6_979_321_856 // 2 / GiB:.2f} GiB." in nf4
    assert "LoRA keeps all 8.03 B parameters in bf16: 14.96 GiB." in nf4
    dq = _paras(rep, "Quantization constants and double quantization")
    # 6,979,321,856 / 64 = 109,051,904 blocks; fp32 absmax: 4 B each = 416.0 MiB (+64 B of code per tensor)
    assert "Every block of 64 4-bit weights has a scale (its absmax): 109.1 M blocks." in dq
    assert "Stored as fp32 they would take 416.0 MiB" in dq
    qlora = plan_scenario(scenarios("8b", "rtx4090")[1])
    assert f"8 bits with one fp32 scale per 256 blocks: {T.size(qlora.components['quant_constants'])}" in dq
    opt = _paras(rep, "Optimizer state and paged optimizers")
    assert f"It is paged: {T.size(qlora.detail['paged_optimizer_bytes'])} of it lives in CUDA managed memory" in opt
    assert "LoRA uses adamw: 320.0 MiB of state" in opt  # 41,943,040 fp32 params x 2 states x 4 B
    act = _paras(rep, "Activations and the loss")
    # 2048 tokens x 128,256 vocabulary x 2 B (bf16 logits) = 501.0 MiB
    assert "the logits take 501.0 MiB" in act
    flipped = plan_scenario(scenarios("8b", "rtx4090")[0].with_(grad_ckpt=False))
    assert f"Without it the peak would be {T.size(flipped.peak_bytes)}" in act


def test_explanations_follow_the_recipe():
    sc = scenarios("8b", None, method="qlora", double_quant=False, optimizer="adamw_8bit")
    paras = dict(T.explain([plan_scenario(s) for s in sc]))
    dq = " ".join(paras["Quantization constants and double quantization"])
    assert "has an fp32 scale" in dq and "Double quantization (--double-quant) would store them in 8 bits" in dq
    opt = " ".join(paras["Optimizer state and paged optimizers"])
    assert "adamw_8bit" in opt and "8-bit state" in opt and "managed memory" not in opt
    assert "LoRA adapters" in paras and "Gradients" in paras


def test_summary_names_the_verdict_and_the_differences(r8b):
    sc, rep = r8b
    lora, qlora = (plan_scenario(s) for s in sc)
    first, second = rep.summary
    assert first.startswith("llama-3.1-8b (8.03 B parameters), sequence 2,048 × batch 1.")
    assert f"LoRA peaks at {T.size(lora.peak_bytes)} and fits with {T.size(lora.headroom_bytes)} to spare" in first
    saved = lora.peak_bytes - qlora.peak_bytes
    assert second.startswith(f"QLoRA needs {T.size(saved)} less than LoRA at the peak")
    assert f"base weights −{T.size(lora.components['weights'] - qlora.components['weights'])}" in second


# --------------------------------------------------------------------------------------------------
# the page


def test_script_json_cannot_close_its_script():
    hostile = {"a": "</script><script>alert(1)</script>", "b": "<!-- & -->", "c": "\u2028 x > y"}
    text = script_json(hostile)
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == hostile


def test_page_embeds_plotly_once_and_the_figures_once(small):
    page = small.to_html()
    assert page.count(PLOTLYJS_BEGIN) == page.count(PLOTLYJS_END) == 1
    assert len(re.findall(r"plotly\.js v\d", page)) == 1
    assert page.count('id="vramplan-figures"') == 1
    assert 4_000_000 < len(page.encode()) < 6_000_000  # plotly.js is ~4.8 MB; the report itself tens of kB
    figures = re.search(r'<script type="application/json" id="vramplan-figures">(.*?)</script>', page).group(1)
    assert json.loads(figures) == small.figures()
    assert [p.id for p in small.plots()] == ["fig-components", "fig-timeline", "fig-seq", "fig-batch"]
    for fid in small.figures():
        assert page.count(f'<div id="{fid}" class="plot"') == 1
    assert "http://" not in strip_plotlyjs(page) and "https://" not in strip_plotlyjs(page)


def test_page_escapes_text_and_tables():
    rep = Report(title="<b>t</b>", summary=("a < b & c",), sections=(
        Section("s", "<i>x</i>", (Text(("<script>alert(1)</script>",), title="<h1>"),
                                  Table(("<c>",), (({"text": "<td>", "class": "ok"},),)),
                                  Plot("p", {"data": [{"name": "</script>"}], "layout": {}}))),))
    page = render(rep, plotlyjs="")
    assert "<b>t</b>" not in page and "&lt;b&gt;t&lt;/b&gt;" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<td class=\"ok\">&lt;td&gt;</td>" in page
    assert page.count("<script") == 4  # plotly.js, figures JSON, plot config, the drawing code


def test_hostile_model_folder_is_escaped(tmp_path, capsys):
    cfg = resources.files("vramplan").joinpath("catalog", "models", "llama-3.2-1b.json").read_text()
    folder = tmp_path / "<script>"
    folder.mkdir()
    (folder / "config.json").write_text(cfg)
    out = tmp_path / "r.html"
    code = main(["report", str(folder), "--seq", "256", "-o", str(out)])
    _, err = capsys.readouterr()
    assert code == 0, err
    page = out.read_text()
    assert page.count("<script") == 4
    assert f"{str(tmp_path)}/&lt;script&gt;" in page  # the title and the tables show the name, escaped
    # figure text from users is escaped before plotly.js sees it
    fig = F.curve_figure("t", "<x>", [1, 2], {"<script>": [GiB, 2 * GiB]})
    assert fig["data"][0]["name"] == "&lt;script&gt;" and fig["layout"]["xaxis"]["title"]["text"] == "&lt;x&gt;"


def test_write_html_is_atomic(tmp_path):
    path = write_html("<p>one</p>", tmp_path / "sub" / "r.html")
    assert path.read_text() == "<p>one</p>"
    write_html("<p>two</p>", path)
    assert path.read_text() == "<p>two</p>"
    assert sorted(p.name for p in path.parent.iterdir()) == ["r.html"]  # no temp file left behind
    assert path.stat().st_mode & 0o044 == 0o044  # readable by others, like any shared report


def test_golden_small_report(small):
    """Llama-3.2-1B at 512 tokens on an RTX 3060: the report data and the page around it, byte for byte.
    Regenerate after a deliberate change: VRAMPLAN_UPDATE_GOLDEN=1 python -m pytest tests/test_report.py"""
    data = json.dumps(small.to_dict(), indent=1, ensure_ascii=False, sort_keys=True) + "\n"
    page = small.to_html(plotlyjs="")
    gold_json, gold_html = GOLDEN / "report-1b-rtx3060.json", GOLDEN / "report-1b-rtx3060.html"
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        gold_json.write_text(data, encoding="utf-8")
        gold_html.write_text(page, encoding="utf-8")
    hint = "regenerate with VRAMPLAN_UPDATE_GOLDEN=1 python -m pytest tests/test_report.py after checking the diff"
    assert data == gold_json.read_text(encoding="utf-8"), hint
    assert page == gold_html.read_text(encoding="utf-8"), hint


def test_golden_numbers_are_the_planners(small):
    """The golden file's numbers are the planner's (so updating it cannot hide a wrong figure)."""
    gold = json.loads((GOLDEN / "report-1b-rtx3060.json").read_text(encoding="utf-8"))
    figs = {b["id"]: b["figure"] for s in gold["sections"] for b in s["blocks"] if b["kind"] == "plot"}
    sc = scenarios("1b", "rtx3060", seq=512)
    peaks = [plan_scenario(s).peak_bytes for s in sc]
    bars = figs["fig-components"]["data"]
    assert [sum(t["customdata"][k] for t in bars) for k in range(2)] == peaks
    assert gold["meta"] == {"kind": "scenario", "model": "llama-3.2-1b", "gpu": "NVIDIA GeForce RTX 3060",
                            "seq": 512, "batch": 1, "methods": ["lora", "qlora", "full"]}


# --------------------------------------------------------------------------------------------------
# accuracy


def _rows(factor=1.01, oom=False):
    from vramplan.records import row_from

    env = {"source": "trace", "device": "cpu", "torch": "2.13.0", "transformers": "5.23.0", "peft": "0.21.2",
           "bitsandbytes": "0.50.2", "date": "2026-11-20"}
    rows = []
    for method, seq, f in (("lora", 512, factor), ("qlora", 512, 1 / factor), ("qlora", 1024, 1.0)):
        b = plan_scenario(Scenario(load_model("1b"), Recipe.default(method), Workload(seq=seq)))
        rows.append(row_from(b, env=env, measured={"meas_peak_tensor_bytes": round(b.peak_tensor_bytes * f),
                                                   "meas_weights": b.components["weights"]}))
    if oom:
        b = plan_scenario(Scenario(load_model("1b"), Recipe.default("lora"), Workload(seq=65536)))
        rows.append(row_from(b, env=env, measured={}, status="oom", error="CUDA out of memory"))
    return rows


def test_accuracy_report_numbers():
    from vramplan.records import to_frame

    rows = _rows(factor=1.25, oom=True)
    rep = accuracy_report(["m.csv"], df=to_frame(rows))
    # errors: 1/1.25 - 1 = -20 %, 1.25 - 1 = +25 %, 0 %: median |e| 20 %, worst +25 % (up to rounding of bytes)
    assert rep.meta["rows"] == 4 and rep.meta["compared"] == 3
    assert rep.meta["median_abs_error"] == pytest.approx(0.20, abs=1e-6)
    assert rep.meta["worst_error"] == pytest.approx(0.25, abs=1e-6)
    fig = rep.figures()["fig-accuracy"]
    panels = [a["text"] for a in fig["layout"]["annotations"]]
    assert panels == ["<b>tensor-level peak</b>", "<b>base weights</b>"]  # only what was measured
    assert fig["layout"]["xaxis"]["title"]["text"] == "predicted GiB"
    small = F.accuracy_figure([{"label": "quant constants", "points": [
        {"pred": 100 * 2**20, "meas": 110 * 2**20, "group": "qlora", "text": "r"}]}])
    assert small["layout"]["xaxis"]["title"]["text"] == "predicted MiB"  # every value under 1 GiB
    assert (small["data"][0]["x"], small["data"][0]["y"]) == ([100.0], [110.0])
    lora = next(t for t in fig["data"] if t["name"] == "LoRA" and t["xaxis"] == "x")
    assert lora["x"] == [round(rows[0]["pred_peak_tensor_bytes"] / GiB, 4)]
    assert lora["y"] == [round(rows[0]["meas_peak_tensor_bytes"] / GiB, 4)]
    tables = [b for s in rep.sections for b in s.blocks if isinstance(b, Table)]
    per_row, by_q, failed = tables[0], tables[1], tables[2]
    assert [r[-1] for r in per_row.rows] == ["-20.00 %", "+25.00 %", "0.00 %"]
    assert by_q.rows[0][:4] == ("tensor-level peak", "3", "20.00 %", "+25.00 %")
    assert failed.rows[0][1:3] == ("oom", "cpu") and failed.rows[0][4] == "CUDA out of memory"
    env = tables[3]
    assert env.rows == (("trace", "cpu", "—", "—", "—", "2.13.0", "5.23.0", "0.21.2", "0.50.2", "2026-11-20", "4"),)
    assert "median |error| of the headline peak 20.00 %".lower() in rep.summary[0].lower()


def test_accuracy_from_files_and_bad_files(tmp_path, capsys):
    from vramplan.records import append_rows

    path = tmp_path / "trace.csv"
    append_rows(path, _rows())
    out = tmp_path / "acc.html"
    assert main(["report", "--measured", str(path), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"wrote {out} (") and "3 measured rows (3 compared, 0 did not complete)" in text
    assert main(["report", "--measured", str(tmp_path / "none.csv"), "-o", str(out)]) == 2
    assert "no such measurement file" in capsys.readouterr().err
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    assert main(["report", "--measured", str(tmp_path / "x.csv"), "-o", str(out)]) == 2
    assert "not a vramplan measurement file" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# command line


def test_cli_model_report(tmp_path, capsys):
    out = tmp_path / "reports" / "8b.html"
    assert main(["report", "8b", "--gpu", "rtx4090", "-o", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert re.fullmatch(rf"wrote {re.escape(str(out))} \(\d\.\d MB\)", lines[0])
    assert lines[1].startswith("llama-3.1-8b (8.03 B parameters), sequence 2,048 × batch 1. LoRA peaks at")
    assert "<h1>llama-3.1-8b on NVIDIA GeForce RTX 4090</h1>" in out.read_text()


@pytest.mark.parametrize("args, message", [
    (["8b"], "name the page to write: add -o FILE.html"),
    (["8b", "-o", "r.txt"], "-o r.txt: a report is an HTML page; name it .html"),
    (["8b", "9b", "-o", "r.html"], "give one model"),
    ([], "give one model"),
    (["--sweep", "a.yaml"], "name the page to write"),
    (["--sweep", "a.yaml", "--measured", "-o", "r.html"], "--sweep and --measured ask for different reports"),
    (["--measured", "m.csv", "--seq", "4096", "-o", "r.html"], "--seq set a model report's scenario"),
    (["--measured", "-o", "r.html"], "--measured needs measurement files"),
    (["--rebuild", "-o", "r.html"], "--rebuild writes every report"),
    (["nosuchmodel", "-o", "r.html"], "unknown model 'nosuchmodel'"),
    (["8b", "--gpu", "24xb", "-o", "r.html"], "unknown GPU '24xb'"),
])
def test_cli_errors(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["report", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vramplan: error: ") and message in err and err.count("\n") == 1
    assert not list(tmp_path.iterdir())  # nothing written


def test_report_command_imports_nothing_heavy_until_it_runs():
    code = ("import sys, vramplan.cli_report; "
            "print(sorted(m for m in ('plotly', 'pandas', 'numpy', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------------------------------
# the committed reports


def test_committed_reports_are_up_to_date():
    from vramplan.report.rebuild import stale

    problems = stale(ROOT)
    assert problems == [], (f"reports/ does not match the code: {', '.join(problems)}; rebuild them with "
                            "`vramplan report --rebuild` (or python -m vramplan.report.rebuild) from the repository root")


def test_rebuild_writes_every_planned_report(tmp_path, capsys, monkeypatch):
    from vramplan.report.rebuild import planned, stale

    for name in ("pyproject.toml",):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "vramplan").mkdir()
    if (ROOT / "scenarios").is_dir():
        shutil.copytree(ROOT / "scenarios", tmp_path / "scenarios")
    assert stale(tmp_path)[0].endswith("(missing)")
    from vramplan.report import rebuild

    monkey = [(e.name, e.model, e.gpu) for e in rebuild.MODEL_REPORTS]
    assert ("8b-on-4090.html", "8b", "rtx4090") in monkey
    monkeypatch.chdir(tmp_path)
    assert main(["report", "--rebuild"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(planned(tmp_path)) + 1 and all(line.startswith("wrote reports/") for line in out)
    assert out[-1].startswith("wrote reports/README.md")
    assert stale(tmp_path) == []
    (tmp_path / "reports" / "old.html").write_text("<p>old</p>")
    assert stale(tmp_path) == ["old.html (no longer built)"]


# --------------------------------------------------------------------------------------------------
# sweeps


@pytest.fixture(scope="module")
def context_sweep():
    from vramplan.report.build import sweep_report
    from vramplan.sweep import sweep_file

    path = ROOT / "scenarios" / "context-length.yaml"
    return sweep_report(path), sweep_file(path).df


def test_sweep_curve_is_the_sweep(context_sweep):
    rep, df = context_sweep
    fig = rep.figures()["fig-sweep-curve"]
    assert [t["name"] for t in fig["data"]] == ["llama-2-7b", "llama-3.1-8b"]
    for t in fig["data"]:
        rows = df[(df["model"] == t["name"]) & (df["gpu"] == "rtx4090")]
        assert t["x"] == [1024, 2048, 4096, 8192, 16384, 32768] == list(rows["seq"])
        assert t["customdata"] == [int(v) for v in rows["peak_bytes"]]
    s = Scenario(load_model("7b"), Recipe.default("qlora"), Workload(seq=16384), resolve_gpu("rtx4090"))
    assert fig["data"][0]["customdata"][4] == plan_scenario(s).peak_bytes
    # the file's two cards are the lines: an RTX 4090 and an 80 GB A100
    lines = sorted(sh["y0"] for sh in fig["layout"]["shapes"] if sh["xref"] == "paper")
    assert lines == [round(25_757_220_864 / GiB, 4), round(85_899_345_920 / GiB, 4)]


def test_sweep_components_tables_and_text(context_sweep):
    rep, df = context_sweep
    bars = rep.figures()["fig-sweep-components"]
    assert bars["data"][0]["x"][0] == "llama-2-7b<br>seq 1024"
    first = df[df["gpu"] == "rtx4090"].iloc[0]
    assert [t["customdata"][0] for t in bars["data"]] == [int(first[f"{c}_bytes"]) for c in COMPONENTS]
    (fit,) = [b for s in rep.sections if s.id == "fits" for b in s.blocks]
    assert fit.columns == ("model", "seq", "peak GiB", "peak falls in", "NVIDIA GeForce RTX 4090",
                           "NVIDIA A100-SXM4-80GB")
    assert len(fit.rows) == 12
    over = [r for r in fit.rows if r[4]["class"] == "over"]
    assert [(r[0], r[1]) for r in over] == [("llama-2-7b", "32768"), ("llama-3.1-8b", "8192"),
                                            ("llama-3.1-8b", "16384"), ("llama-3.1-8b", "32768")]
    text = " ".join(p for s in rep.sections for b in s.blocks if isinstance(b, Text) for p in b.paragraphs)
    # the scenario file's own comment: 7B QLoRA fits a 4090 up to 16k tokens, 8B only up to 4k
    assert "On NVIDIA GeForce RTX 4090 it fits up to seq 16,384" in text
    assert "it fits up to seq 4,096; on NVIDIA A100-SXM4-80GB it fits at every seq" in text
    assert rep.summary == ("How does a 7B QLoRA step grow with context length from 1k to 32k tokens, and where do "
                           "activations and the loss take over?", "12 scenarios × 2 GPUs: 20 of 24 fit.")


def test_sweep_knob_effects_pair_rows(tmp_path):
    from vramplan.report.build import sweep_report

    path = tmp_path / "dq.yaml"
    path.write_text("question: what does double quant save?\nmodel: 8b\nmethod: qlora\n"
                    "double_quant: [false, true]\n")
    rep = sweep_report(path)
    assert rep.meta["x"] is None and rep.meta["series"] == ["double_quant"]
    off, on = (plan_scenario(Scenario(load_model("8b"), Recipe(double_quant=d))) for d in (False, True))
    text = " ".join(p for s in rep.sections for b in s.blocks if isinstance(b, Text) for p in b.paragraphs)
    saved = on.peak_bytes - off.peak_bytes
    assert f"double_quant on instead of double_quant off: peak −{T.size(-saved)}; the component that moves most " \
           f"is quant constants (−{T.size(off.components['quant_constants'] - on.components['quant_constants'])}" in text


def test_sweep_with_hostile_model_name(tmp_path, capsys):
    cfg = resources.files("vramplan").joinpath("catalog", "models", "qwen2.5-0.5b.json").read_text()
    (tmp_path / "<script>").mkdir()
    (tmp_path / "<script>" / "config.json").write_text(cfg)
    path = tmp_path / "s.yaml"
    path.write_text('# <script>alert(1)</script>\nquestion: "<b>why</b>"\nmodel: ["<script>/config.json", 0.5b]\n'
                    "method: qlora\ngpu: 8gb\nseq: [512, 1024, 4096]\n")
    out = tmp_path / "s.html"
    assert main(["report", "--sweep", str(path), "-o", str(out)]) == 0, capsys.readouterr().err
    page = out.read_text()
    assert page.count("<script") == 4 and "<b>why</b>" not in page
    assert "# &lt;script&gt;alert(1)&lt;/script&gt;" in page  # the file, shown verbatim and escaped
    from vramplan.report.build import sweep_report

    rep = sweep_report(path)
    names = [t["name"] for t in rep.figures()["fig-sweep-curve"]["data"]]
    assert names == ["&lt;script&gt;", "qwen2.5-0.5b"]  # escaped before plotly.js renders it
    assert rep.figures()["fig-sweep-components"]["data"][0]["x"][0] == "&lt;script&gt;<br>seq 512"
    assert main(["report", "--sweep", str(tmp_path / "none.yaml"), "-o", str(out)]) == 2
    assert "no such file" in capsys.readouterr().err


def test_readme_report_examples_are_real_output(tmp_path, capsys, monkeypatch):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("$ vramplan report 8b --gpu rtx4090 -o reports/8b-on-4090.html\n", 1)[1].split("```", 1)[0]
    model_part, sweep_part = block.split("$ vramplan report --sweep scenarios/context-length.yaml "
                                         "-o reports/sweep-context-length.html\n")
    monkeypatch.chdir(tmp_path)
    shutil.copytree(ROOT / "scenarios", tmp_path / "scenarios")
    for args, expected in ((["8b", "--gpu", "rtx4090", "-o", "reports/8b-on-4090.html"], model_part),
                           (["--sweep", "scenarios/context-length.yaml", "-o", "reports/sweep-context-length.html"],
                            sweep_part)):
        assert main(["report", *args]) == 0
        out = capsys.readouterr().out
        # the page size depends on the plotly.js release installed; everything else is exact
        size = re.compile(r"\(\d+\.\d MB\)")
        assert size.sub("(N MB)", out) == size.sub("(N MB)", expected)
