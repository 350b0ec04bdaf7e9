"""The command line: exit codes, one-line errors, the JSON contract, and no torch on the planning path."""

import json
import subprocess
import sys

import pytest

from vramplan.cli import main
from vramplan.plan import COMPONENTS


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_plan_json_contract(capsys):
    code, out, err = run(capsys, "plan", "8b", "--seq", "4096", "--batch", "2", "--rank", "64", "--json",
                         "--gpu", "24gb")
    assert code == 0, err
    data = json.loads(out)
    assert data["model"]["params"] == 8_030_261_248
    assert data["gpu"] == {"name": "24 GiB", "id": "24gb", "memory_bytes": 24 * 2**30, "compute_capability": None}
    assert data["workload"]["seq"] == 4096 and data["workload"]["batch"] == 2
    assert [p["method"] for p in data["plans"]] == ["lora", "qlora"]
    for p in data["plans"]:
        assert set(p["components"]) == set(COMPONENTS)
        assert all(isinstance(v, int) for v in p["components"].values())
        assert sum(p["components"].values()) == p["peak_bytes"]
        assert p["peak_allocated_bytes"] <= p["peak_reserved_bytes"] <= p["peak_bytes"]
        assert p["fits"] == (p["peak_bytes"] <= 24 * 2**30)
        assert p["headroom_bytes"] == 24 * 2**30 - p["peak_bytes"]


def test_one_method_one_plan(capsys):
    code, out, _ = run(capsys, "plan", "7b", "--method", "qlora", "--no-kbit-prep", "--optimizer",
                       "paged_adamw_8bit", "--json")
    data = json.loads(out)
    assert code == 0 and len(data["plans"]) == 1
    p = data["plans"][0]
    assert p["recipe"]["kbit_prep"] is False and p["recipe"]["optimizer"] == "paged_adamw_8bit"
    assert p["fits"] is None and p["headroom_bytes"] is None and data["gpu"] is None


def test_local_config_path(capsys, tmp_path):
    from importlib import resources

    cfg = resources.files("vramplan").joinpath("catalog", "models", "llama-3.2-1b.json").read_text()
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text(cfg)
    code, out, _ = run(capsys, "plan", str(folder / "config.json"), "--json", "--method", "qlora")
    by_file = json.loads(out)
    code2, out2, _ = run(capsys, "plan", str(folder), "--json", "--method", "qlora")
    code3, out3, _ = run(capsys, "plan", "1b", "--json", "--method", "qlora")
    assert code == code2 == code3 == 0
    assert by_file["plans"] == json.loads(out2)["plans"] == json.loads(out3)["plans"]


def test_moe_default_dropout_is_zero(capsys):
    code, out, _ = run(capsys, "plan", "47b", "--json", "--method", "qlora")
    assert code == 0 and json.loads(out)["plans"][0]["recipe"]["dropout"] == 0.0


def test_main_job_prints_table(capsys):
    code, out, _ = run(capsys, "7b", "--gpu", "24gb")
    assert code == 0
    assert "LoRA" in out and "QLoRA" in out and "verdict" in out and "fits" in out
    assert "peak (nvidia-smi)" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["7b", "--gpu", "24xb"], "unknown GPU '24xb': use a size such as 24gb"),
        (["nosuchmodel"], "unknown model 'nosuchmodel': use a shorthand"),
        (["7b", "--seq", "0"], "--seq 0: use a sequence length from 1"),
        (["7b", "--batch", "-3"], "--batch -3: use a micro-batch from 1"),
        (["7b", "--rank", "100000"], "--rank 100000: use a rank from 1 to 4096"),
        (["7b", "--seq", "abc"], "Invalid value for '--seq': 'abc' is not a valid integer"),
        (["7b", "--optimizer", "adam9000"], "--optimizer 'adam9000': use one of adamw"),
        (["7b", "--targets", "q_proj,foo_proj"], "unknown target module foo_proj for llama-2-7b"),
        (["7b", "--dropout", "1.5"], "--dropout 1.5: use a probability in [0, 1)"),
        (["7b", "--gpus", "4"], "--gpus 4 needs a way to use them: add --shard ddp or --shard fsdp"),
        (["7b", "--blocksize", "100"], "--blocksize 100: bitsandbytes accepts 64"),
        (["meta-llama/Not-A-Model"], "is not in the catalogue and nothing is fetched by default; add --online"),
        (["7b", "--gpu", "0gb"], "must be positive"),
        (["7b", "--frobnicate"], "No such option '--frobnicate'"),
        (["47b", "--dropout", "0.1"], "peft cannot apply LoRA dropout to the fused experts of mixtral-8x7b"),
    ],
)
def test_bad_input_exits_2_with_one_line(capsys, args, message):
    code, out, err = run(capsys, *args)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("vramplan: error: ")
    assert message in err


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "is not valid JSON (Expecting property name enclosed in double quotes at line 1 column 2)"),
        ("[1, 2]", "holds a JSON list, not an object"),
        ('{"model_type": "llama"}', "config.json has no 'hidden_size'"),
        ('{"model_type": "bert", "hidden_size": 8}', "model_type 'bert' is not modelled by the planner"),
        ('{"model_type": "llama", "hidden_size": 1e400, "intermediate_size": 8, "num_hidden_layers": 1,'
         ' "num_attention_heads": 1, "vocab_size": 8}', "'hidden_size' must be an integer"),
        ('{"model_type": "llama", "hidden_size": 99999999999, "intermediate_size": 8, "num_hidden_layers": 1,'
         ' "num_attention_heads": 1, "vocab_size": 8}', "hidden_size=99999999999 is out of range"),
        ('{"model_type": "llama", "hidden_size": 64, "intermediate_size": 8, "num_hidden_layers": -1,'
         ' "num_attention_heads": 1, "vocab_size": 8}', "num_hidden_layers=-1 is out of range"),
        ('{"model_type": "llama", "hidden_size": 64, "intermediate_size": 8, "num_hidden_layers": 2,'
         ' "num_attention_heads": 6, "vocab_size": 8}', "hidden_size 64 is not divisible by num_attention_heads 6"),
        ('{"model_type": "llama", "hidden_size": 64, "intermediate_size": 8, "num_hidden_layers": 2,'
         ' "num_attention_heads": 8, "num_key_value_heads": 3, "vocab_size": 8}', "not a multiple of"),
        ('{"model_type": "llama", "hidden_size": 64, "intermediate_size": 8, "num_hidden_layers": 2,'
         ' "num_attention_heads": 8, "vocab_size": 8, "torch_dtype": "int8"}', "dtype 'int8' is not one of"),
    ],
)
def test_broken_or_hostile_config(capsys, tmp_path, content, message):
    path = tmp_path / "config.json"
    path.write_text(content)
    code, out, err = run(capsys, "plan", str(path))
    assert code == 2 and out == ""
    assert err.count("\n") == 1
    assert message in err


def test_huge_config_refused(capsys, tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"pad": "' + "x" * (5 * 1024 * 1024) + '"}')
    code, _, err = run(capsys, "plan", str(path))
    assert code == 2 and "too large for a config.json" in err


def test_folder_without_config(capsys, tmp_path):
    code, _, err = run(capsys, "plan", str(tmp_path))
    assert code == 2 and "has no config.json" in err


def test_console_script_and_module_entry_points():
    out = subprocess.run([sys.executable, "-m", "vramplan", "plan", "1b", "--json", "--method", "lora"],
                         capture_output=True, text=True, check=True)
    assert json.loads(out.stdout)["plans"][0]["method"] == "lora"
    bad = subprocess.run([sys.executable, "-m", "vramplan", "7b", "--gpu", "24xb"], capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and bad.stderr.count("\n") == 1


def test_planning_path_imports_no_torch():
    code = (
        "import sys; from vramplan.cli import main; main(['plan', '70b', '--gpu', '24gb', '--json']); "
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'bitsandbytes', 'numpy', 'pandas') if m in sys.modules]; "
        "sys.stderr.write(repr(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stderr.strip() == "[]"


def test_every_command_has_help_with_an_example():
    from vramplan.cli import cli

    for name, cmd in cli.commands.items():
        assert cmd.help and "Example:" in cmd.help, name


def test_readme_shows_the_real_output_of_the_main_job():
    """The README's example output is what `vramplan 7b --gpu 24gb` prints today (80 columns, no colour)."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    block = readme.split("$ vramplan 7b --gpu 24gb\n", 1)[1].split("```", 1)[0]
    out = subprocess.run([sys.executable, "-m", "vramplan", "7b", "--gpu", "24gb"], capture_output=True, text=True,
                         check=True, env={"COLUMNS": "80", "PATH": "", "TERM": "dumb"}).stdout
    assert [line.rstrip() for line in out.splitlines()] == [line.rstrip() for line in block.splitlines()]
