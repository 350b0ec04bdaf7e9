"""GPU advice: counts, picks and their reasons, sorting, budget; the `gpus` and `plan --max` commands."""

import csv
import io
import json

import pytest

from vramplan.advise import GPU_COUNTS, HEADROOM_FRACTION, advise, parse_tokens
from vramplan.cli import main
from vramplan.errors import ScenarioError
from vramplan.gpus import catalog, resolve_gpu
from vramplan.models import load_model
from vramplan.plan import plan_scenario
from vramplan.solve import max_fit
from vramplan.spec import Recipe, Scenario, Workload


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def options_70b():
    shape = load_model("70b")
    return advise([Scenario(shape, Recipe.default(m), Workload()) for m in ("lora", "qlora")])


def test_parse_tokens():
    assert parse_tokens("100M") == 100_000_000
    assert parse_tokens("1.5b") == 1_500_000_000
    assert parse_tokens("2e8") == 200_000_000
    assert parse_tokens("5000") == 5000
    for bad in ("12x", "", "-5M", "0"):
        with pytest.raises(ScenarioError, match="--tokens"):
            parse_tokens(bad)


def test_every_option_uses_the_fewest_cards_that_fit(options_70b):
    assert len(options_70b) == 2 * len(catalog())
    for o in options_70b:
        s = Scenario(load_model("70b"), Recipe.default(o.method), Workload(), o.gpu)
        if not o.fits:
            assert plan_scenario(s.with_(gpus=8, shard="fsdp")).peak_bytes > o.gpu.memory_bytes
            continue
        assert o.gpus in GPU_COUNTS
        at = s.with_(gpus=o.gpus, shard="fsdp" if o.gpus > 1 else "none")
        b = plan_scenario(at)
        assert b.peak_bytes == o.peak_bytes <= o.gpu.memory_bytes
        if o.gpus > 1:
            fewer = GPU_COUNTS[GPU_COUNTS.index(o.gpus) - 1]
            fewer_s = s.with_(gpus=fewer, shard="fsdp" if fewer > 1 else "none")
            assert plan_scenario(fewer_s).peak_bytes > o.gpu.memory_bytes
        assert o.max_batch == max_fit(at, "batch") and o.max_seq == max_fit(at, "seq")


def test_picks_are_the_best_of_the_roomy_options(options_70b):
    roomy = [o for o in options_70b if o.fits and o.headroom_fraction >= HEADROOM_FRACTION]
    by_label = {lbl: o for o in options_70b for lbl in o.labels}
    assert set(by_label) == {"buy", "rent", "fastest"}
    assert by_label["buy"].purchase_usd == min(o.purchase_usd for o in roomy if o.purchase_usd is not None)
    assert by_label["rent"].usd_per_million_tokens == min(
        o.usd_per_million_tokens for o in roomy if o.usd_per_million_tokens is not None)
    assert by_label["fastest"].tokens_per_second == max(o.tokens_per_second for o in roomy)
    for o in by_label.values():
        assert o.roomy and len(o.reasons) == len(o.labels)
    assert by_label["buy"].reasons[0].startswith("cheapest to buy that fits with >= 10% headroom: $")


def test_sorted_by_the_recommendation(options_70b):
    tiers = [0 if o.roomy else (2 if o.fits else 3) for o in options_70b]
    assert tiers == sorted(tiers)
    priced = [o.usd_per_million_tokens for o in options_70b if o.roomy and o.usd_per_million_tokens is not None]
    assert priced == sorted(priced)
    assert options_70b[0].labels and "rent" in options_70b[0].labels


def test_cost_arithmetic(options_70b):
    o = next(o for o in options_70b if o.fits and o.gpus > 1 and o.rent_usd_per_hour)
    assert o.rent_usd_per_hour == pytest.approx(o.gpus * o.gpu.rent_usd_per_hour)
    assert o.hours == pytest.approx(100_000_000 / o.tokens_per_second / 3600)
    assert o.rent_cost_usd == pytest.approx(o.hours * o.rent_usd_per_hour)
    assert o.usd_per_million_tokens == pytest.approx(o.rent_cost_usd / 100)
    assert o.purchase_usd == o.gpus * o.gpu.price_usd


def test_budget_filters_by_purchase_price():
    s = Scenario(load_model("8b"), Recipe.default("qlora"), Workload(seq=8192))
    opts = advise(s, budget_usd=2000)
    assert opts and all(o.purchase_usd is not None and o.purchase_usd <= 2000 for o in opts)
    cheap_cards = {g.id for g in catalog() if g.price_usd is not None and g.price_usd <= 2000}
    assert {o.gpu.id for o in opts} <= cheap_cards
    with pytest.raises(ScenarioError, match="positive purchase budget"):
        advise(s, budget_usd=0)


def test_gpus_without_model_keeps_the_catalogue(capsys):
    code, out, _ = run(capsys, "gpus", "--json")
    assert code == 0 and len(json.loads(out)) == len(catalog())
    code, out, _ = run(capsys, "gpus", "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(rows) == len(catalog()) and rows[8]["id"] == "rtx4090"


def test_gpus_model_json_csv_and_table(capsys):
    code, out, err = run(capsys, "gpus", "8b", "--method", "qlora", "--json", "--tokens", "10M")
    assert code == 0, err
    data = json.loads(out)
    assert data["tokens"] == 10_000_000 and len(data["options"]) == len(catalog())
    assert data["speed_assumptions"] == {"matmul_efficiency": 0.4, "bandwidth_efficiency": 0.8,
                                         "link_efficiency": 0.7}
    assert data["headroom_fraction"] == 0.1 and data["recipes"][0]["optimizer"] == "paged_adamw_32bit"
    assert "2026-07-23" in next(o["price_basis"] for o in data["options"] if o["gpu"] == "rtx4090")
    first = data["options"][0]
    assert {"gpu", "gpus", "fits", "peak_bytes", "max_batch", "max_seq", "tokens_per_second", "hours",
            "rent_cost_usd", "usd_per_million_tokens", "purchase_usd", "labels", "reasons"} <= set(first)
    code, out, _ = run(capsys, "gpus", "8b", "--method", "qlora", "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(rows) == len(catalog()) and rows[0]["gpu"] == first["gpu"]
    code, out, _ = run(capsys, "gpus", "8b", "--method", "qlora")
    assert code == 0
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "buy: " in out and "rent: " in out and "fastest: " in out


@pytest.mark.parametrize("args,message", [
    (["gpus", "8b", "--gpus", "2", "--shard", "fsdp"], "vramplan gpus chooses the GPU count itself"),
    (["gpus", "8b", "--tokens", "lots"], "--tokens 'lots': use a count such as 100M"),
    (["gpus", "8b", "--budget", "-3"], "--budget -3.0: use a positive purchase budget"),
    (["gpus", "8b", "--json", "--csv"], "--json and --csv together"),
    (["plan", "8b", "--max", "seq"], "--max seq needs a GPU to fit into: add --gpu"),
    (["plan", "8b", "--max", "rank", "--method", "full", "--gpu", "h100"], "--max rank needs a LoRA method"),
    (["plan", "8b", "--max", "seq", "--gpu", "24gb", "--step", "0"], "--step 0: use a positive step"),
])
def test_errors_exit_2_with_one_line(capsys, args, message):
    code, out, err = run(capsys, *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_plan_max_json_and_table(capsys):
    code, out, err = run(capsys, "plan", "8b", "--max", "seq", "--gpu", "rtx4090", "--json")
    assert code == 0, err
    data = json.loads(out)
    gpu = resolve_gpu("rtx4090")
    for m in ("lora", "qlora"):
        s = Scenario(load_model("8b"), Recipe.default(m), Workload(), gpu)
        assert data["max"]["values"][m] == max_fit(s, "seq")
    assert data["max"]["values"]["qlora"] == 7228
    for p in data["plans"]:
        assert p["fits"] and p["workload"]["seq"] == data["max"]["values"][p["method"]]
        assert data["max"]["peak_above_bytes"][p["method"]] > gpu.memory_bytes
    code, out, _ = run(capsys, "plan", "8b", "--max", "seq", "--gpu", "rtx4090", "--step", "256")
    assert code == 0 and "7,168" in out and "multiples of 256" in out
    code, out, _ = run(capsys, "plan", "70b", "--max", "batch", "--gpu", "24gb")
    assert code == 0 and "does not fit even at batch 1" in out


def test_offload_option_and_cards_without_bf16(capsys):
    code, out, err = run(capsys, "gpus", "70b", "--method", "qlora", "--no-kbit-prep", "--offload", "--json")
    assert code == 0, err
    by_id = {o["gpu"]: o for o in json.loads(out)["options"]}
    assert by_id["rtx4090"]["fits"] and by_id["rtx4090"]["gpus"] == 1 and by_id["rtx4090"]["shard"] == "fsdp"
    assert by_id["v100-32gb"]["bf16_ok"] is False and by_id["v100-32gb"]["labels"] == []
    assert by_id["h100"]["bf16_ok"] is True
    code, out, _ = run(capsys, "plan", "70b", "--method", "qlora", "--shard", "fsdp", "--offload", "--gpu",
                       "rtx4090", "--json")
    data = json.loads(out)
    assert code == 0 and data["workload"]["offload"] is True and data["plans"][0]["fits"] is True
    code, out, err = run(capsys, "plan", "8b", "--offload")
    assert code == 2 and "--offload is FSDP's CPU offload: add --shard fsdp" in err


@pytest.mark.parametrize("command", [
    "vramplan gpus 70b --method qlora",
    "vramplan gpus 70b --method qlora --no-kbit-prep --offload --budget 2000",
    "vramplan plan 8b --max seq --gpu 24gb",
])
def test_readme_shows_real_output(command):
    import subprocess
    import sys
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    block = readme.split(f"$ {command}\n", 1)[1].split("```", 1)[0]
    out = subprocess.run([sys.executable, "-m", *command.split()], capture_output=True, text=True, check=True,
                         env={"COLUMNS": "80", "PATH": "", "TERM": "dumb"}).stdout
    assert [line.rstrip() for line in out.splitlines()] == [line.rstrip() for line in block.splitlines()]


@pytest.mark.parametrize("model", ["47b", "0.5b", "70b"])
def test_table_is_readable_at_80_columns(model):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "vramplan", "gpus", model, "--all"], capture_output=True, text=True,
                         check=True, env={"COLUMNS": "80", "PATH": "", "TERM": "dumb"}).stdout
    assert max(len(line.rstrip()) for line in out.splitlines()) <= 80
    assert "…" not in out  # nothing truncated
