"""Profile many scenarios in a row: a scenario file expanded to jobs, one measured row appended per job.

A suite file is an ordinary scenario file (``vramplan.scenario_file``): the same keys, lists as grid axes,
``zip:`` to pair axes. It names no ``gpu:`` (the suite measures this machine's card) and no ``gpus:`` above 1.

The runner:

- expands the grid in file order and plans every scenario for this machine's GPU (the prediction goes into
  the row next to the measurement);
- skips scenarios whose (scenario_key, env_key) is already in the output file with status ok or oom, so a
  re-run after an interruption measures only what is missing (``redo=True`` measures everything again);
- runs each job (on CUDA in a fresh process, see ``profile.run_isolated``) and appends its row at once with
  ``records.append_rows`` (atomic), so Ctrl-C loses at most the scenario that was running;
- records an out-of-memory step as an ``oom`` row and a scenario the libraries refuse as an ``error`` row,
  and goes on; a problem of the machine (no GPU, bitsandbytes without CUDA, no NVML) stops the suite.

Example usage::

    items = suite_items("scenarios/calibration.yaml")
    result = run_suite(items, out="scenarios/measured/h100.csv", options=SuiteOptions(device="cuda"))

Known Limitations: one GPU per process (``gpus: 1``); every job builds its model anew (seconds to a minute
for the largest models), counted in the time estimate.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from .nvml import DEFAULT_HZ

# Seconds a job spends outside its timed steps (start a process, import the libraries, build the skeleton,
# make and quantize the weights, the untimed tracked step): an estimate per job plus a part per billion
# parameters, for planning a suite's duration only.
JOB_SETUP_SECONDS = 20.0
SETUP_SECONDS_PER_BILLION = 1.0


@dataclass
class SuiteItem:
    """One scenario of a suite, the config.json it builds from, and a checkpoint folder when it has weights."""

    scenario: object
    config: dict
    checkpoint: str | None = None

    @property
    def label(self) -> str:
        s = self.scenario
        r, w = s.recipe, s.workload
        return (f"{r.method} {s.model.name} seq {w.seq} x batch {w.batch}, {r.optimizer}"
                f"{', ckpt' if r.grad_ckpt else ''}, r={r.rank}")


@dataclass
class SuiteOptions:
    """How every job of a suite runs (see profile.ProfileJob)."""

    device: str = "cuda"
    gpu_index: int = 0
    warmup: int = 2
    steps: int = 5
    nvml: bool = True
    sample_hz: float = DEFAULT_HZ
    components: bool = True
    isolate: bool | None = None  # None: a fresh process per job on CUDA, in this process on CPU


@dataclass
class SuiteResult:
    """Rows measured by this run (breakdown, result, row), how many were skipped, whether Ctrl-C stopped it."""

    measured: list = field(default_factory=list)
    skipped: int = 0
    total: int = 0
    interrupted: bool = False


def suite_items(path, *, layers: int | None = None) -> list:
    """The scenarios of a suite file, in grid order, each with its config dict (and checkpoint folder)."""
    from vramplan.models import load_config, resolve_name, shape_from_config
    from vramplan.scenario_file import AXES, ScenarioFileError, combos, load_scenario_file
    from vramplan.spec import Scenario, Workload
    from vramplan.sweep import _recipe

    sf = load_scenario_file(path)
    if sf.axes["gpu"].given:
        raise ScenarioFileError(path, [f"line {sf.axes['gpu'].line}: a profile suite measures this machine's GPU; "
                                       f"remove gpu: (the card is recorded with every row)"])
    base = Path(path).resolve().parent
    configs: dict = {}
    checkpoints: dict = {}
    for value, shape in sf.models.items():
        if resolve_name(value) is not None:
            name = value
        else:
            p = Path(value).expanduser()
            name = str(p if p.is_absolute() else base / p)
            folder = Path(name) if Path(name).is_dir() else None
            if folder is not None and any(folder.glob("*.safetensors")):
                checkpoints[value] = str(folder)
        cfg = load_config(name, layers=layers)
        configs[value] = (cfg, shape if layers is None else
                          shape_from_config(cfg, name=f"{shape.name} ({layers} layers)", source=shape.source))
    items = []
    for row in combos(sf, AXES):
        if row["gpus"] != 1:
            raise ScenarioFileError(path, [f"line {sf.axes['gpus'].line}: profile runs one process on one GPU; "
                                           f"use gpus: 1 (memory per GPU differs with sharding)"])
        cfg, shape = configs[row["model"]]
        recipe = _recipe(sf, row)
        workload = Workload(seq=row["seq"], batch=row["batch"], gpus=1, shard="none")
        workload.validate()
        items.append(SuiteItem(Scenario(shape, recipe, workload), cfg, checkpoints.get(row["model"])))
    return items


def estimate_seconds(items, gpu, *, warmup: int, steps: int, components: bool = True) -> list:
    """Seconds each job should take on ``gpu`` (a catalogue GpuSpec): the speed model's step time for the
    warm-up, timed and tracked steps, plus the setup estimate above."""
    from vramplan.speed import estimate_speed

    out = []
    for item in items:
        s = replace(item.scenario, gpu=gpu)
        step = estimate_speed(s, gpu).step_seconds
        n = warmup + steps + (1 if components else 0)
        out.append(JOB_SETUP_SECONDS + SETUP_SECONDS_PER_BILLION * s.model.params / 1e9 + n * step)
    return out


def run_suite(items, *, out=None, options: SuiteOptions | None = None, env: dict, gpu=None, redo: bool = False,
              progress=None, runner=None) -> SuiteResult:
    """Measure each item and append its row to ``out`` right away (see the module docstring).

    ``env`` is the provenance (``profile.profile_env``), ``gpu`` the GpuSpec the planner predicts for.
    ``progress(event, index, item, detail)`` is told ``"start"``, ``"skip"`` and ``"done"`` (detail: the
    (breakdown, result, row) triple). ``runner(job)`` replaces ``profile.run`` (tests).
    """
    from vramplan.plan import plan_scenario
    from vramplan.records import append_rows, done_keys, env_key, knobs_of, row_from, scenario_key

    from .profile import ProfileJob, run

    options = options or SuiteOptions()
    if runner is None:
        def runner(job):
            return run(job, isolate=options.isolate)
    say = progress or (lambda *_: None)
    done = done_keys(out) if out is not None and not redo else set()
    ekey = env_key(env)
    result = SuiteResult(total=len(items))
    for i, item in enumerate(items):
        s = replace(item.scenario, gpu=gpu)
        if (scenario_key(knobs_of(s)), ekey) in done:
            result.skipped += 1
            say("skip", i, item, None)
            continue
        breakdown = plan_scenario(s)
        say("start", i, item, None)
        job = ProfileJob(s, item.config, device=options.device, gpu_index=options.gpu_index, warmup=options.warmup,
                         steps=options.steps, nvml=options.nvml, sample_hz=options.sample_hz,
                         components=options.components, checkpoint=item.checkpoint)
        try:
            res = runner(job)
            row = row_from(breakdown, env=env, measured=res.measured, status=res.status, error=res.error)
            if out is not None:
                append_rows(out, [row])  # atomic: Ctrl-C leaves the file with or without this row, never half
        except KeyboardInterrupt:
            result.interrupted = True
            break
        result.measured.append((breakdown, res, row))
        say("done", i, item, (breakdown, res, row))
    return result
