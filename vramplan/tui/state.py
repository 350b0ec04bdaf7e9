"""The knobs of the terminal UI turned into plans, without textual: field checks, planning, exports.

Each field is checked on its own so that an error can be shown under the field that caused it; the recipe is
then built exactly as ``vramplan.cli._build`` builds it (tests/test_tui.py holds the two equal), so the
exported ``vramplan plan`` command line reproduces what the screen shows.
"""

from __future__ import annotations

import json
import os
import shlex
import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from ..errors import ScenarioError, UnknownModelError, VramplanError

# The fields a person edits in the UI, in screen order. Values: text for the first six, an option name for
# optimizer and attn, a bool for the switches. "auto" optimizer = each method's tutorial default.
FIELDS = ("model", "gpu", "seq", "batch", "rank", "targets", "optimizer", "attn", "grad_ckpt", "double_quant",
          "kbit_prep")
AUTO_OPTIMIZER = "auto"

# Defaults of the shared CLI knobs (cli._knobs); a `vramplan 7b` started without the CLI gets these.
DEFAULT_KW = {
    "method": "both", "seq": 2048, "batch": 1, "rank": 16, "alpha": 32.0, "dropout": 0.05,
    "targets": "all-linear", "adapter_dtype": "fp32", "dtype": "bf16", "quant": "nf4", "double_quant": True,
    "blocksize": 64, "kbit_prep": True, "optimizer": None, "grad_ckpt": True, "attn": "sdpa", "autocast": True,
    "gpus": 1, "shard": "none", "online": False, "dropout_is_default": True,
}


class FieldErrors(VramplanError):
    """One or more fields hold values that cannot be planned; ``errors`` maps field name -> one-line message."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = dict(errors)


@dataclass(frozen=True)
class Planned:
    """A valid state of the screen: what was typed, the resolved model and GPU, and one plan per method."""

    model_text: str
    gpu_text: str
    kw: dict
    shape: object  # ModelShape
    gpu: object  # GpuSpec | None
    plans: tuple  # Breakdown per method, lora first

    @cached_property
    def fits(self) -> tuple:
        """What fits, per method: the largest batch and sequence on this GPU, the smallest catalogue GPU."""
        return tuple(what_fits(p.scenario) for p in self.plans)

    def to_json(self) -> dict:
        """The plan JSON of ``vramplan plan --json`` (the DESIGN.md contract) for this state."""
        from ..cli import plan_json

        return plan_json(self.shape, list(self.plans), self.gpu)

    def command_line(self) -> str:
        """The ``vramplan plan`` command that prints this state's plan: only knobs that differ from the defaults."""
        args = ["vramplan", "plan", self.model_text]
        if self.gpu_text:
            args += ["--gpu", self.gpu_text]
        args += _changed_options(self.kw)
        return " ".join(shlex.quote(a) for a in args)

    def slug(self) -> str:
        """A file-name stem naming the model, GPU and workload: ``llama-2-7b_24gb_seq2048_b1``."""
        w = self.plans[0].scenario.workload
        parts = [self.shape.name, self.gpu.id if self.gpu else "no-gpu", f"seq{w.seq}", f"b{w.batch}"]
        safe = ["".join(c if c.isalnum() or c in ".-" else "-" for c in p).strip(".-") or "x" for p in parts]
        return "_".join(safe)


@dataclass(frozen=True)
class Fits:
    """What fits for one method: the largest micro-batch at the scenario's sequence length and the longest
    sequence at its batch on the scenario's GPU (None without a GPU; 0 when even 1 does not fit), and the
    smallest catalogue GPU on which the scenario as it is fits (None when none does)."""

    method: str
    max_batch: int | None
    max_seq: int | None
    smallest_gpu: object  # GpuSpec | None


def what_fits(scenario) -> Fits:
    """Solve the three "what fits" questions for one scenario (``vramplan.solve``: exact on the model)."""
    from ..solve import max_fit, smallest_gpu

    batch = seq = None
    if scenario.gpu is not None:
        batch = max_fit(scenario, "batch")
        seq = max_fit(scenario, "seq")
    return Fits(scenario.recipe.method, batch, seq, smallest_gpu(scenario))


class Session:
    """Plans the screen's fields. Keeps models it has loaded so that a Hub config is fetched once, on Enter."""

    def __init__(self, kw: dict | None = None, shapes: dict | None = None):
        self.kw = {**DEFAULT_KW, **(kw or {})}
        self._shapes = dict(shapes or {})

    def initial_values(self, model: str, gpu: str | None) -> dict:
        """Field values for a start from the command line."""
        kw = self.kw
        return {
            "model": model, "gpu": gpu or "", "seq": str(kw["seq"]), "batch": str(kw["batch"]),
            "rank": str(kw["rank"]), "targets": kw["targets"], "optimizer": kw["optimizer"] or AUTO_OPTIMIZER,
            "attn": kw["attn"], "grad_ckpt": kw["grad_ckpt"], "double_quant": kw["double_quant"],
            "kbit_prep": kw["kbit_prep"],
        }

    def _model(self, text: str, fetch: bool):
        from ..models import load_model

        name = text.strip()
        if not name:
            raise UnknownModelError("type a model: a shorthand such as 7b, a catalogue name or a config.json path")
        if name in self._shapes:
            return self._shapes[name]
        online = bool(self.kw.get("online")) and fetch
        try:
            shape = load_model(name, online=online)
        except UnknownModelError as exc:
            if self.kw.get("online") and not fetch and "add --online" in str(exc):
                raise UnknownModelError(f"{name!r}: press Enter to read its config.json from the Hub") from None
            raise
        if online:
            self._shapes[name] = shape  # fetched from the network: keep it for the next change
        return shape

    def plan(self, values: dict, *, fetch: bool = False) -> Planned:
        """Check every field, then plan each method. Raises FieldErrors naming each field that is wrong."""
        from ..gpus import resolve_gpu
        from ..plan import plan_scenario
        from ..spec import OPTIMIZERS, Recipe, Workload

        errors: dict[str, str] = {}
        kw = dict(self.kw)
        shape = gpu = None
        try:
            shape = self._model(str(values["model"]), fetch)
        except VramplanError as exc:
            errors["model"] = str(exc)
        gpu_text = str(values["gpu"]).strip()
        if gpu_text:
            try:
                gpu = resolve_gpu(gpu_text)
            except VramplanError as exc:
                errors["gpu"] = str(exc)
        checks = {
            "seq": lambda v: Workload(seq=v).validate(),
            "batch": lambda v: Workload(batch=v).validate(),
            "rank": lambda v: Recipe(rank=v).validate(),
        }
        for name, check in checks.items():
            text = str(values[name]).strip()
            try:
                number = int(text.replace("_", ""))
            except ValueError:
                errors[name] = f"{text!r} is not a whole number; type e.g. {DEFAULT_KW[name]}"
                continue
            try:
                check(number)
            except VramplanError as exc:
                errors[name] = str(exc)
                continue
            kw[name] = number
        kw["targets"] = str(values["targets"]).strip() or "all-linear"
        optimizer = values["optimizer"]
        if optimizer != AUTO_OPTIMIZER and optimizer not in OPTIMIZERS:
            errors["optimizer"] = f"{optimizer!r}: use auto or one of {', '.join(OPTIMIZERS)}"
        kw["optimizer"] = None if optimizer == AUTO_OPTIMIZER else optimizer
        kw["attn"] = values["attn"]
        for name in ("grad_ckpt", "double_quant", "kbit_prep"):
            kw[name] = bool(values[name])
        if errors:
            raise FieldErrors(errors)
        try:
            scenarios = scenarios_for(shape, gpu, kw)
            plans = tuple(plan_scenario(s) for s in scenarios)
        except VramplanError as exc:
            # Knobs valid on their own that the model refuses: an unknown target module, dropout on experts.
            raise FieldErrors({"targets": str(exc)}) from None
        return Planned(str(values["model"]).strip(), gpu_text, kw, shape, gpu, plans)


def scenarios_for(shape, gpu, kw: dict) -> list:
    """The scenarios ``vramplan.cli._build`` makes from the same knobs, one per method, for a loaded model."""
    from ..cli import scenarios_for as cli_scenarios

    return cli_scenarios(shape, gpu, kw)


def _changed_options(kw: dict) -> list[str]:
    """CLI options for every knob whose value differs from the option's default, in the CLI's order."""
    import click

    from ..cli import plan_cmd

    out: list[str] = []
    for param in plan_cmd.params:
        if not isinstance(param, click.Option) or param.name not in kw or param.name in ("gpu", "as_json"):
            continue
        value = kw[param.name]
        if param.name == "dropout" and kw.get("dropout_is_default", False):
            continue
        if value == param.default or (value is None and param.default is None):
            continue
        if param.is_bool_flag:
            if param.secondary_opts:
                out.append(param.opts[0] if value else param.secondary_opts[0])
            elif value:
                out.append(param.opts[0])
            continue
        text = f"{value:g}" if isinstance(value, float) else str(value)
        out += [param.opts[0], text]
    return out


def write_atomic(path: Path, text: str) -> Path:
    """Write text to path through a temporary file in the same folder and os.replace (never half a file)."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; an export is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def export_json(planned: Planned, folder: Path | str = ".") -> Path:
    """Write the plan JSON of the current state to ``FOLDER/vramplan_<slug>.json``; return the path."""
    path = Path(folder) / f"vramplan_{planned.slug()}.json"
    try:
        return write_atomic(path, json.dumps(planned.to_json(), indent=2) + "\n")
    except OSError as exc:
        raise ScenarioError(f"cannot write {path}: {exc.strerror or exc}; start vramplan from a writable folder")



def report_available() -> bool:
    """Whether this installation has the HTML report builder (``vramplan report``)."""
    import importlib.util

    return importlib.util.find_spec("vramplan.report") is not None


def export_html(planned: Planned, folder: Path | str = ".") -> Path:
    """Write the HTML report of ``vramplan report`` for the current state to ``FOLDER/vramplan_<slug>.html``."""
    from ..report.build import model_report
    from ..report.page import write_html

    report = model_report([p.scenario for p in planned.plans], gpu=planned.gpu)
    return write_html(report.to_html(), Path(folder) / f"vramplan_{planned.slug()}.html")
