"""The sweep engine equals the scalar planner row for row; schema, writers, Ctrl-C, and the command."""

import json
from dataclasses import replace
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")
pd = pytest.importorskip("pandas")

from vramplan import sweep as sweep_mod  # noqa: E402
from vramplan.cli import main  # noqa: E402
from vramplan.gpus import resolve_gpu  # noqa: E402
from vramplan.models import load_model  # noqa: E402
from vramplan.plan import COMPONENTS, plan_scenario  # noqa: E402
from vramplan.scenario_file import load_scenario_file, parse_scenario  # noqa: E402
from vramplan.spec import Recipe, Scenario, Workload  # noqa: E402
from vramplan.speed import estimate_speed  # noqa: E402
from vramplan.sweep import COLUMNS, SweepOutputError, run_sweep, write  # noqa: E402

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"

GRID = """
question: Everything that changes the plan, crossed
model: [8b, 47b, 9b]             # GQA + 128k vocab, MoE (dropout off by default), Gemma 2 (eager, softcap)
method: [lora, qlora, full]
gpu: [rtx4090, h100]             # H100: 32 MiB cuBLAS workspaces
seq: [1, 77, 2048, 8192]
batch: [1, 3]
rank: [8, 64]
gpus: [1, 2, 4]
shard: [none, ddp, fsdp]
zip: [gpus, shard]
optimizer: [adamw_torch, paged_adamw_8bit]
kbit_prep: [true, false]
"""


@pytest.fixture(scope="module")
def grid():
    sf = parse_scenario(GRID)
    return sf, run_sweep(sf).df


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def scalar(row) -> object:
    """plan_scenario for one sweep row, built from the row's knobs as the CLI builds them."""
    shape = load_model({"llama-3.1-8b": "8b", "mixtral-8x7b": "47b", "gemma-2-9b": "9b"}[row["model"]])
    base = Recipe.default(row["method"])
    dropout = 0.0 if shape.is_moe else 0.05
    recipe = replace(base, rank=int(row["rank"]), optimizer=row["optimizer"], dropout=dropout,
                     kbit_prep=bool(row["kbit_prep"]))
    w = Workload(seq=int(row["seq"]), batch=int(row["batch"]), gpus=int(row["gpus"]), shard=row["shard"])
    return plan_scenario(Scenario(shape, recipe, w, resolve_gpu(row["gpu"])))


def test_grid_shape_and_order(grid):
    sf, df = grid
    assert len(df) == sf.rows == 3 * 3 * 2 * 4 * 2 * 2 * 3 * 2 * 2
    assert list(df.columns) == list(COLUMNS)
    # grid order: the first axis is outermost, the last varies fastest
    assert list(df["model"][:2]) == ["llama-3.1-8b"] * 2
    assert list(df["kbit_prep"][:4]) == [False, False, False, False]  # lora rows: kbit prep applies to QLoRA only
    q = df[df["method"] == "qlora"]
    assert list(q["kbit_prep"][:2]) == [True, False]
    assert set(zip(df["gpus"], df["shard"])) == {(1, "none"), (2, "ddp"), (4, "fsdp")}
    assert (df["tokens"] == df["seq"] * df["batch"]).all()


def test_equals_scalar_planner_row_for_row(grid):
    _, df = grid
    rng = np.random.default_rng(0)
    for k in rng.choice(len(df), size=80, replace=False):
        row = df.iloc[int(k)]
        b = scalar(row)
        for c in COMPONENTS:
            assert row[f"{c}_bytes"] == b.components[c], (k, c)
        assert row["peak_bytes"] == b.peak_bytes == sum(b.components.values())
        assert row["peak_reserved_bytes"] == b.peak_reserved_bytes
        assert row["peak_allocated_bytes"] == b.peak_allocated_bytes
        assert row["peak_tensor_bytes"] == b.peak_tensor_bytes
        assert (row["peak_phase"], row["peak_where"]) == (b.peak_phase, b.peak_where)
        assert row["trainable_params"] == b.trainable_params
        assert row["params"] == b.scenario.model.params
        assert bool(row["fits"]) == b.fits and row["headroom_bytes"] == b.headroom_bytes
        assert row["gpu_memory_bytes"] == b.scenario.gpu.memory_bytes
        assert row["tokens_per_s"] == pytest.approx(estimate_speed(b.scenario).tokens_per_second, rel=1e-9)


def test_zipped_model_and_gpu_equal_scalar():
    sf = parse_scenario("question: q\nmodel: [8b, 70b, 3b]\ngpu: [rtx4090, h100, 24gb]\nzip: [model, gpu]\n"
                        "method: qlora\nseq: [512, 4096]\n")
    df = run_sweep(sf).df
    assert list(zip(df["model"], df["gpu"], df["seq"])) == [
        ("llama-3.1-8b", "rtx4090", 512), ("llama-3.1-8b", "rtx4090", 4096), ("llama-3.1-70b", "h100", 512),
        ("llama-3.1-70b", "h100", 4096), ("llama-3.2-3b", "24gb", 512), ("llama-3.2-3b", "24gb", 4096)]
    for k, (name, gpu) in enumerate([("8b", "rtx4090")] * 2 + [("70b", "h100")] * 2 + [("3b", "24gb")] * 2):
        b = plan_scenario(Scenario(load_model(name), Recipe.default("qlora"), Workload(seq=int(df["seq"][k])),
                                   resolve_gpu(gpu)))
        assert (df["peak_bytes"][k], df["overhead_bytes"][k], df["headroom_bytes"][k]) == (
            b.peak_bytes, b.components["overhead"], b.headroom_bytes)


def test_components_sum_to_peak_and_hopper_differs(grid):
    _, df = grid
    total = sum(df[f"{c}_bytes"] for c in COMPONENTS)
    assert (total == df["peak_bytes"]).all()
    assert (df["peak_allocated_bytes"] <= df["peak_reserved_bytes"]).all()
    a = df[(df["gpu"] == "rtx4090")].reset_index(drop=True)
    h = df[(df["gpu"] == "h100")].reset_index(drop=True)
    # the same scenarios on sm90+: two 32 MiB cuBLAS workspaces instead of two 8.125 MiB ones
    assert ((h["overhead_bytes"] - a["overhead_bytes"]) >= 2 * (32 - 8.125) * 2**20).all()


def test_no_gpu_means_empty_fits():
    df = run_sweep(parse_scenario("question: q\nmodel: 8b\nmethod: qlora\nseq: [512, 1024]\n")).df
    assert df["gpu"].isna().all() and df["fits"].isna().all() and df["headroom_bytes"].isna().all()
    assert df["tokens_per_s"].isna().all()
    assert str(df["fits"].dtype) == "boolean" and str(df["headroom_bytes"].dtype) == "Int64"
    b = plan_scenario(Scenario(load_model("8b"), Recipe.default("qlora"), Workload(seq=1024)))
    assert df["peak_bytes"].tolist()[1] == b.peak_bytes


def test_cli_empty_cells(tmp_path, capsys):
    f = tmp_path / "nogpu.yaml"
    f.write_text("question: No GPU named\nmodel: 8b\nmethod: qlora\n")
    assert main(["sweep", str(f), "--columns", "seq,fits,headroom_bytes,tokens_per_s,gpu"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split() == ["seq", "┃", "fits", "┃", "headroom", "┃", "tokens/s", "┃", "gpu"]
    assert out[3].split() == ["2048", "│", "-", "│", "-", "│", "-", "│", "-"]


def test_bare_size_has_memory_but_no_speed():
    df = run_sweep(parse_scenario("question: q\nmodel: 8b\nmethod: qlora\ngpu: [24gb, rtx4090]\n")).df
    assert list(df["gpu"]) == ["24gb", "rtx4090"] and list(df["gpu_memory_bytes"]) == [24 * 2**30, 25_757_220_864]
    assert np.isnan(df["tokens_per_s"][0]) and df["tokens_per_s"][1] > 0
    assert df["fits"].tolist() == [True, True]


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".json"])
def test_writers_round_trip(tmp_path, suffix, grid):
    _, df = grid
    small = df.head(50)
    path = write(small, tmp_path / f"sweep{suffix}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"sweep{suffix}"]  # no temporary file left
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()  # not mkstemp's 0600
    if suffix == ".csv":
        back = pd.read_csv(path)
    elif suffix == ".parquet":
        back = pd.read_parquet(path)
    else:
        records = json.loads(path.read_text())
        assert isinstance(records, list) and len(records) == 50
        assert isinstance(records[0]["peak_bytes"], int) and records[0]["peak_bytes"] == int(small["peak_bytes"][0])
        back = pd.DataFrame(records)
    assert list(back.columns) == list(COLUMNS)
    for c in ("peak_bytes", "weights_bytes", "headroom_bytes", "seq", "rank"):
        assert [int(v) for v in back[c]] == [int(v) for v in small[c]]
    assert [bool(v) for v in back["fits"]] == [bool(v) for v in small["fits"]]
    assert list(back["peak_where"]) == list(small["peak_where"])


def test_writer_refuses_unknown_suffix(tmp_path, grid):
    with pytest.raises(SweepOutputError, match=r"use \.csv, \.parquet or \.json, e\.g\. --out sweep\.parquet"):
        write(grid[1], tmp_path / "sweep.xlsx")
    with pytest.raises(SweepOutputError, match="does not exist"):
        write(grid[1], tmp_path / "nope" / "sweep.csv")


def test_interrupt_keeps_finished_groups(grid):
    sf, full = grid
    calls = []

    def progress(done, total):
        calls.append((done, total))
        if done == 3:
            raise KeyboardInterrupt

    res = run_sweep(sf, progress=progress)
    assert res.interrupted and res.groups_done == 3 and calls[-1][0] == 3 and res.groups_total == calls[0][1]
    assert 0 < len(res.df) < len(full) and res.total_rows == len(full)
    # the kept rows are whole groups, in grid order (the index is the grid position), equal to the full sweep's
    assert res.df.index.is_monotonic_increasing
    pd.testing.assert_frame_equal(res.df, full.loc[res.df.index], check_names=False)


def test_cli_table(capsys):
    code = main(["sweep", str(SCENARIOS / "context-length.yaml"), "--limit", "3"])
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("How does a 7B QLoRA step grow with context length")
    assert lines[4] == ("llama-2-7b │ rtx4090 │ 1024 │    3.99 │  0.10 │  1.13 │     0.57 │ 6.24 │ log_softmax backward │ "
                        "yes  │    17.75")
    assert "… 21 more rows: --limit 24 shows them, --out sweep.csv writes them" in out
    assert lines[-2] == "with method qlora, batch 1, grad_ckpt on; other knobs at the CLI defaults"
    assert lines[-1] == "sizes in GiB (1024³ B); 24 rows"


def test_cli_columns_json_and_out(tmp_path, capsys):
    f = str(SCENARIOS / "context-length.yaml")
    code = main(["sweep", f, "--columns", "model,seq,peak_bytes", "--limit", "1"])
    out, _ = capsys.readouterr()
    assert code == 0 and "peak" in out and "headroom" not in out
    code = main(["sweep", f, "--json"])
    out, _ = capsys.readouterr()
    rows = json.loads(out)
    assert code == 0 and len(rows) == 24 and list(rows[0]) == list(COLUMNS)
    b = plan_scenario(Scenario(load_model("7b"), Recipe.default("qlora"), Workload(seq=1024), resolve_gpu("rtx4090")))
    assert rows[0]["peak_bytes"] == b.peak_bytes and rows[0]["fits"] is True
    target = tmp_path / "ctx.parquet"
    code = main(["sweep", f, "--out", str(target)])
    out, _ = capsys.readouterr()
    assert code == 0 and out == f"wrote 24 rows x {len(COLUMNS)} columns to {target}\n"
    assert len(pd.read_parquet(target)) == 24
    code = main(["sweep", f, "--columns", "seq,peak"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("vramplan: error: --columns seq,peak: peak is not a sweep column")
    code = main(["sweep", f, "--out", str(tmp_path / "x.txt")])
    assert code == 2 and "use .csv, .parquet or .json" in capsys.readouterr().err


def test_cli_ctrl_c_writes_what_is_done(tmp_path, capsys, monkeypatch):
    real = sweep_mod._plan_group
    calls = []

    def flaky(*args, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(sweep_mod, "_plan_group", flaky)
    target = tmp_path / "ctx.csv"
    code = main(["sweep", str(SCENARIOS / "context-length.yaml"), "--out", str(target)])
    _, err = capsys.readouterr()
    assert code == 130
    assert f"vramplan: sweep interrupted: kept 12 of 24 rows (1 of 2 groups) in {target}\n" in err
    df = pd.read_csv(target)
    assert len(df) == 12 and list(df.columns) == list(COLUMNS)


def test_shipped_scenarios_run_and_say_how():
    files = sorted(p for p in SCENARIOS.glob("*.yaml") if p.name != "calibration.yaml")
    assert len(files) >= 7
    for p in files:
        text = p.read_text()
        assert text.startswith("# Question: "), p.name
        assert f"# Command:  vramplan sweep scenarios/{p.name}\n" in text, p.name
        sf = load_scenario_file(p)
        df = run_sweep(sf).df
        assert len(df) == sf.rows > 0
        assert sf.columns, f"{p.name} names the columns that answer its question"


def test_readme_examples_are_real_output(tmp_path, capsys, monkeypatch):
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    block = readme.split("$ vramplan sweep scenarios/double-quant-65b.yaml\n", 1)[1].split("```", 1)[0]
    assert main(["sweep", str(SCENARIOS / "double-quant-65b.yaml")]) == 0
    assert capsys.readouterr().out == block
    bad = readme.split("$ cat bad.yaml\n", 1)[1].split("$ vramplan sweep bad.yaml\n", 1)
    (tmp_path / "bad.yaml").write_text(bad[0])
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", "bad.yaml"]) == 2
    assert capsys.readouterr().err == bad[1].split("```", 1)[0]


def test_progress_bar_only_on_a_terminal_with_many_groups(monkeypatch):
    from vramplan import cli_sweep

    sf = parse_scenario(GRID)
    monkeypatch.setattr(cli_sweep.sys.stderr, "isatty", lambda: False, raising=False)
    assert cli_sweep._progress_callback(sf) == (None, None)
    monkeypatch.setattr(cli_sweep.sys.stderr, "isatty", lambda: True, raising=False)
    progress, update = cli_sweep._progress_callback(sf)
    assert progress is not None and progress.tasks[0].total == sweep_mod.count_groups(sf) == 216
    update(5, 216)
    assert progress.tasks[0].completed == 5
    small = parse_scenario("question: q\nmodel: 8b\nmethod: [lora, qlora]\nseq: [512, 1024]\n")
    assert cli_sweep._progress_callback(small) == (None, None)  # 2 groups: no bar
