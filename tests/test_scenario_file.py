"""Scenario files: axes, ranges, zip, defaults, and one error that lists every problem with its line."""

from pathlib import Path

import pytest

from vramplan.cli import main
from vramplan.scenario_file import MAX_ROWS, ScenarioFileError, load_scenario_file, parse_scenario

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"


def problems(text: str, **kw) -> list[str]:
    with pytest.raises(ScenarioFileError) as exc:
        parse_scenario(text, **kw)
    return exc.value.problems


def test_axes_ranges_and_defaults():
    sf = parse_scenario(
        "question: How?\n"
        "models: [7b, 8b]\n"  # "models" is accepted for "model"
        "seq: {from: 1024, to: 32768, times: 2}\n"
        "batch: {from: 1, to: 7, step: 3}\n"
        "method: both\n"
        "double_quant: [true, false]\n"
    )
    assert sf.axes["seq"].values == (1024, 2048, 4096, 8192, 16384, 32768)
    assert sf.axes["batch"].values == (1, 4, 7)
    assert sf.axes["method"].values == ("lora", "qlora")
    assert [a.name for a in sf.varying] == ["model", "seq", "batch", "method", "double_quant"]
    assert sf.rows == 2 * 6 * 3 * 2 * 2
    # knobs the file leaves out take the CLI defaults
    assert sf.axes["rank"].values == (16,) and not sf.axes["rank"].given
    assert sf.axes["optimizer"].values == (None,)  # the method's default optimizer
    assert sf.axes["gpu"].values == (None,) and sf.gpus == {None: None}
    assert sf.models["7b"].name == "llama-2-7b"
    assert sf.auto_dropout


def test_zip_pairs_axes_and_keeps_file_order():
    sf = parse_scenario(
        "question: Paired\nmodel: 7b\nmethod: qlora\nseq: [512, 1024, 2048]\nrank: [8, 16]\nbatch: [8, 4, 2]\nzip: [seq, batch]\n"
    )
    assert sf.rows == 3 * 2
    assert sf.units[:4] == (("model",), ("method",), ("seq", "batch"), ("rank",))
    sf2 = parse_scenario(
        "question: Two groups\nmethod: lora\nmodel: [7b, 8b]\nrank: [8, 64]\nseq: [512, 1024]\nbatch: [2, 1]\n"
        "zip: [[model, rank], [seq, batch]]\n"
    )
    assert sf2.rows == 4
    assert sf2.units[:3] == (("method",), ("model", "rank"), ("seq", "batch"))


def test_config_path_relative_to_the_file():
    sf = load_scenario_file(SCENARIOS / "double-quant-65b.yaml")
    shape = sf.models["models/llama-65b.json"]
    assert shape.name == "llama-65b"
    assert shape.params == 65_285_660_672  # LLaMA-65B: 80 layers, hidden 8192, MLP 22016, vocab 32000


def test_every_problem_with_its_line():
    text = (
        "# comment line 1\n"
        "question: broken\n"
        "model: [7b, 9000b]\n"  # line 3
        "gpu: [rtx4090, rtx9999]\n"  # line 4
        "method: qlorra\n"  # line 5
        "seq: {from: 1024, to: 512, step: 1}\n"  # line 6
        "batch:\n"
        "  - 1\n"
        "  - 0\n"  # line 9
        "  - two\n"  # line 10
        "rankk: 8\n"  # line 11
        "double_quant: maybe\n"  # line 12
        "gpus: rtx4090\n"  # line 13
        "zip: [batch, rank]\n"  # line 14
        "seq: 4096\n"  # line 15: twice
    )
    got = problems(text, path="bad.yaml")
    assert [p.split(":")[0] for p in got] == [f"line {n}" for n in (3, 4, 5, 6, 9, 10, 11, 12, 13, 14, 15)]
    assert got[0].startswith("line 3: model 9000b: unknown model '9000b'")
    assert got[1].startswith("line 4: gpu rtx9999: unknown GPU 'rtx9999'")
    assert got[2] == "line 5: method: 'qlorra' is not one of lora, qlora, full, both (did you mean qlora?)"
    assert got[3] == "line 6: seq: range from 1024 is above to 512"
    assert got[4] == "line 9: batch: 0 is out of range; use 1 to 65536, e.g. batch: 4"
    assert got[5] == "line 10: batch: 'two' is not a whole number; e.g. batch: 4"
    assert got[6].startswith("line 11: unknown key rankk (did you mean rank?)")
    assert got[7] == "line 12: double_quant: 'maybe' is not true or false"
    assert got[8].startswith("line 13: gpus: 'rtx4090': gpus is the number of GPUs; name cards with gpu:")
    assert got[9] == "line 14: zip: rank is not given in the file; give it as a list"
    assert got[10] == "line 15: seq is given twice (first on line 6); keep one"
    with pytest.raises(ScenarioFileError, match=r"^bad\.yaml: 11 problems: line 3: model 9000b"):
        parse_scenario(text, path="bad.yaml")


def test_yaml_syntax_and_shape_errors():
    assert problems("question: x\nmodel: [7b\n") == [
        "line 3: not valid YAML (expected ',' or ']', but got '<stream end>')"]
    assert problems("") == ["the file is empty; start it with question: and name a model (model: 7b)"]
    assert problems("- 7b\n- 8b\n") == [
        "line 1: a scenario file is a mapping of keys (question:, model:, seq: ...), not a list"]
    assert problems("model: 7b\n") == [
        "line 1: no question: say what the file answers, e.g. question: How does memory grow with context?"]
    assert problems("question: 42\nmodel: 7b\n") == ["line 1: question: must be a sentence of text"]


def test_value_checks():
    base = "question: q\nmodel: 7b\n"
    assert problems(base + "blocksize: 96\n") == [
        "line 3: blocksize: 96: bitsandbytes accepts 64, 128, 256, 512, 1024, 2048, 4096"]
    assert problems(base + "dropout: 1.5\n") == ["line 3: dropout: 1.5 is not a probability in [0, 1); e.g. dropout: 0.05"]
    assert problems(base + "rank: [8, 8]\n") == ["line 3: rank: 8 listed more than once; list each value once"]
    assert problems(base + "rank: []\n") == ["line 3: rank: the list is empty; give at least one value"]
    assert problems(base + "optimizer: {from: 1, to: 2, step: 1}\n")[0].startswith(
        "line 3: optimizer: ranges ({from, to, step}) are for whole-number knobs")
    assert problems(base + "seq: {from: 1, to: 8}\n")[0].startswith(
        "line 3: seq: a range has from, to and one of step or times")
    assert problems(base + "seq: [[1, 2]]\n")[0].startswith("line 3: seq: a list inside a list")
    assert problems(base + "seq: [512, 1024]\nbatch: [1, 2, 4]\nzip: [seq, batch]\n") == [
        "line 5: zip: paired lists must be equally long: seq has 2 (line 3), batch has 3 (line 4)"]
    assert problems(base + "gpu: [rtx4090, '4090']\n") == ["line 3: gpu 4090 is the same card as rtx4090; list it once"]
    assert problems(base + "columns: [peak, seq]\n") == [
        "line 3: columns: 'peak' is not a sweep column (did you mean peak_bytes?)"]


def test_models_and_gpus():
    assert problems("question: q\nmodel: [7b, llama-2-7b]\n") == [
        "line 2: model llama-2-7b is llama-2-7b, like 7b; list it once"]
    assert problems("question: q\nmodel: meta-llama/Llama-3.3-70B\n") == [
        "line 2: model meta-llama/Llama-3.3-70B: not in the catalogue, and a sweep reads nothing from the Hub: "
        "download its config.json and name the path (relative to the scenario file), or use a catalogue model "
        "(`vramplan models`)"]
    sf = parse_scenario("question: q\nmodel: 8b\ngpu: [24, 80gb, h100]\n")
    assert [sf.gpus[g].memory_bytes for g in sf.axes["gpu"].values] == [24 * 2**30, 80 * 2**30, 85_520_809_984]


def test_combinations_the_libraries_refuse():
    base = "question: q\nmodel: 7b\nmethod: qlora\n"
    assert problems(base + "gpus: [1, 2]\n") == [
        "line 4: gpus 2 with shard none: say how the GPUs share the job (shard: fsdp or ddp), or pair gpus and "
        "shard with zip:"]
    # zipped, the pairs are (1, none) and (2, fsdp): fine
    assert parse_scenario(base + "gpus: [1, 2]\nshard: [none, fsdp]\nzip: [gpus, shard]\n").rows == 2
    assert problems("question: q\nmodel: 7b\nmethod: lora\ntargets: [all-linear, 'q_proj,w1']\n")[0].startswith(
        "line 4: targets: unknown target module w1 for llama-2-7b; use all-linear or some of:")
    # Mixtral: the default dropout becomes 0 for the fused experts (as on the command line) ...
    assert parse_scenario("question: q\nmodel: 47b\nmethod: qlora\n").rows == 1
    # ... but an explicit dropout is refused as peft refuses it
    assert problems("question: q\nmodel: 47b\nmethod: qlora\ndropout: 0.1\n")[0].startswith(
        "line 4: dropout: peft cannot apply LoRA dropout to the fused experts of mixtral-8x7b")


def test_row_limit():
    got = problems("question: q\nmodel: 7b\nmethod: qlora\nseq: {from: 1, to: 100000, step: 1}\nbatch: {from: 1, to: 60, step: 1}\n")
    assert got == [f"line 4: the grid has 6,000,000 rows (100000 x 60); the limit is {MAX_ROWS:,}: narrow an axis "
                   f"or pair axes with zip:"]


def test_cli_reports_problems_on_one_line(tmp_path, capsys):
    f = tmp_path / "bad.yaml"
    f.write_text("question: q\nmodel: [7b, 9000b]\nseq: 0\n")
    code = main(["sweep", str(f)])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"vramplan: error: {f}: 2 problems: line 2: model 9000b: unknown model '9000b'")
    assert "; line 3: seq: 0 is out of range; use 1 to 4194304, e.g. seq: 2048" in err
    code = main(["sweep", str(tmp_path / "missing.yaml")])
    assert code == 2
    assert capsys.readouterr().err == (f"vramplan: error: {tmp_path / 'missing.yaml'}: no such file; the shipped ones "
                                       f"are in scenarios/ (ls scenarios/*.yaml)\n")
