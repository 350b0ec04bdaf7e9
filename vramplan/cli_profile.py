"""``vramplan profile``: the real step on this machine's GPU (or CPU), measured and set beside the prediction."""

from __future__ import annotations

import json

import click

from .cli import _build, _knobs
from .errors import MissingDependencyError, ScenarioError

DEFAULT_SAMPLE_HZ = 500  # profilers.nvml.DEFAULT_HZ (not imported here: the CLI imports profilers lazily)
CPU_PARAMS_LIMIT = 2_000_000_000
GiB = 2**30


@click.command("profile")
@click.argument("model", required=False)
@click.option("--suite", "suite_path", default=None,
              help="A scenario file (e.g. scenarios/calibration.yaml): profile every scenario of its grid; "
                   "the knobs come from the file.")
@click.option("--out", default=None, help="Append one row per scenario to this .csv or .parquet file.")
@click.option("--device", type=click.Choice(["cuda", "cpu"]), default="cuda", show_default=True,
              help="cuda: the real step on a GPU; cpu: the same pipeline on the CPU (small models; no paging, "
                   "tensor-level memory only).")
@click.option("--gpu-index", type=int, default=0, show_default=True, help="Which GPU (torch's numbering).")
@click.option("--steps", type=int, default=5, show_default=True, help="Measured (timed) steps.")
@click.option("--warmup", type=int, default=2, show_default=True,
              help="Steps before measuring (optimizer state, kernels, allocator settle).")
@click.option("--layers", type=int, default=None, help="Keep only the first N decoder layers (a small variant).")
@click.option("--no-nvml", is_flag=True, help="Record torch's counters only (no device-level peak).")
@click.option("--sample-hz", type=float, default=DEFAULT_SAMPLE_HZ, show_default=True,
              help="NVML samples per second (at least 100).")
@click.option("--no-components", is_flag=True,
              help="On a GPU, skip the untimed step that splits memory into components.")
@click.option("--random-weights", is_flag=True, help="Ignore a model folder's *.safetensors weights.")
@click.option("--redo", is_flag=True, help="With --suite --out: measure scenarios already in the file again.")
@click.option("--dry-run", is_flag=True,
              help="List the scenarios with their predicted peak and the time the run should take; measure nothing.")
@click.option("--gpu", "estimate_gpu", default="h100", show_default=True,
              help="With --dry-run: the card to predict and estimate time for.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@_knobs
def profile_cmd(model, suite_path, out, device, gpu_index, steps, warmup, layers, no_nvml, sample_hz,
                no_components, random_weights, redo, dry_run, estimate_gpu, as_json, **kw):
    """Run the real LoRA / QLoRA training step, measure its memory and speed, and compare with the plan.

    Builds the model exactly as `vramplan trace` does (random weights from config.json, or a model folder's
    safetensors weights; 4-bit layers quantized on the GPU), runs --warmup steps, then --steps timed steps
    with the recipe's optimizer while NVML is sampled. Prints predicted vs measured per component and peak;
    --out appends one row per scenario (an out-of-memory step is recorded as an "oom" row). On a machine
    without a GPU, --device cpu runs the same pipeline on small models.

    Example:

        vramplan profile 8b --seq 2048 --steps 10 --out scenarios/measured/my-4090.csv

        vramplan profile ./my-model --method qlora --optimizer paged_adamw_8bit

        vramplan profile --suite scenarios/calibration.yaml --out scenarios/measured/h100-2026-11.csv
    """
    if (model is None) == (suite_path is None):
        raise click.UsageError("give a MODEL or --suite FILE (one of them), e.g. vramplan profile 8b --seq 2048")
    ctx = click.get_current_context()
    kw = dict(kw, dropout_is_default=ctx.get_parameter_source("dropout") == click.core.ParameterSource.DEFAULT)
    if kw["shard"] == "fsdp" and kw["gpus"] > 1:
        if suite_path is not None:
            raise ScenarioError("--gpus/--shard fsdp runs one model under torchrun: give a MODEL, not --suite")
        return _fsdp(model, layers, device, out, as_json, kw)
    if kw["gpus"] != 1 or kw["shard"] != "none":
        raise ScenarioError("profile runs one process per GPU unless sharded: use --gpus N --shard fsdp, or "
                            "leave out --gpus and --shard")
    from profilers.suite import SuiteOptions

    options = SuiteOptions(device=device, gpu_index=gpu_index, warmup=warmup, steps=steps, nvml=not no_nvml,
                           sample_hz=sample_hz, components=not no_components)
    options_check(options)
    items = _items(model, suite_path, layers, random_weights, kw)
    _verify_checkpoints(items)
    if dry_run:
        return _dry_run(items, estimate_gpu, warmup=warmup, steps=steps, components=not no_components,
                        as_json=as_json)
    if device == "cpu":
        big = [it.scenario.model for it in items if it.scenario.model.params > CPU_PARAMS_LIMIT]
        if big:
            raise ScenarioError(f"--device cpu allocates the model in CPU memory; {big[0].name} has "
                                f"{big[0].params / 1e9:.1f}B parameters: add --layers 2, or profile on a GPU")
    env, gpu = _machine(device, gpu_index, not no_nvml, model or suite_path, items)

    from profilers.suite import run_suite

    show = _Printer(as_json=as_json, suite=suite_path is not None, total=len(items), env=env)
    result = run_suite(items, out=out, options=options, env=env, gpu=gpu, redo=redo or suite_path is None,
                       progress=show)
    show.finish(result, out)
    if result.interrupted:
        raise click.Abort()


def _fsdp(model, layers, device, out, as_json, kw) -> None:
    """``--gpus N --shard fsdp``: the step under torchrun with FSDP2 (gloo on CPU, NCCL on GPUs), per rank."""
    import json as _json

    from profilers.distributed import run_fsdp
    from profilers.environment import library_versions

    from .cli import _build
    from .models import load_config, shape_from_config
    from .plan import plan_scenario

    shape, scenarios, _ = _build(model, None, kw)
    cfg = load_config(model, online=kw["online"], layers=layers)
    if layers is not None:
        from dataclasses import replace

        shape = shape_from_config(cfg, name=f"{shape.name} ({layers} layers)", source=shape.source)
        scenarios = [replace(s, model=shape) for s in scenarios]
    if device == "cpu" and shape.params > CPU_PARAMS_LIMIT:
        raise ScenarioError(f"--device cpu allocates the model in CPU memory; {shape.name} has "
                            f"{shape.params / 1e9:.1f}B parameters: add --layers 2, or profile on GPUs")
    if device == "cuda":
        from profilers.recipe import require

        torch = require("torch")
        have = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if have < kw["gpus"]:
            raise ScenarioError(f"--gpus {kw['gpus']} --shard fsdp needs {kw['gpus']} CUDA GPUs and this machine has "
                                f"{have}: run the same FSDP step on CPU processes with --device cpu --layers 2")
    results = []
    for s in scenarios:
        if not as_json:
            click.echo(f"{s.recipe.method}: {s.workload.gpus} processes under torchrun, FSDP full shard "
                       f"({'gloo, CPU' if device == 'cpu' else 'NCCL, GPUs'}) ...", err=True)
        b = plan_scenario(s)
        run = run_fsdp(s, cfg, nproc=s.workload.gpus, device=device)
        results.append((b, run))
    if out:
        from .records import append_rows, row_from

        env = {"source": "profile", "device": f"{device} x{kw['gpus']} (FSDP2, "
               f"{'gloo' if device == 'cpu' else 'nccl'})", **library_versions(),
               "date": __import__("datetime").date.today().isoformat()}
        rows = []
        for b, run in results:
            top = max(run["ranks"], key=lambda r: r["peak_bytes"])
            phase = max(top["phases"], key=lambda k: top["phases"][k]["peak_bytes"])
            measured = {f"meas_{c}": int(v) for c, v in top["phases"][phase]["components"].items()}
            measured.update(meas_peak_tensor_bytes=int(top["peak_bytes"]), meas_peak_phase=phase)
            rows.append(row_from(b, env=env, measured=measured))
        append_rows(out, rows)
    if as_json:
        click.echo(_json.dumps([{"method": b.method, "planned_peak_tensor_bytes_per_gpu": b.peak_tensor_bytes,
                                 "ranks": run["ranks"]} for b, run in results], indent=2))
        return
    for b, run in results:
        click.echo(f"{b.method}  per GPU, tensor level (GiB): planned {_gib(b.peak_tensor_bytes)}")
        for r in run["ranks"]:
            diff = 100.0 * (b.peak_tensor_bytes - r["peak_bytes"]) / r["peak_bytes"]
            phases = "  ".join(f"{k} {_gib(v['peak_bytes'])}" for k, v in r["phases"].items())
            click.echo(f"  rank {r['rank']}: measured {_gib(r['peak_bytes'])} ({diff:+.2f} %)  {phases}")


def options_check(options) -> None:
    """Bad numbers as one-line errors before anything is built."""
    if not 1 <= options.steps <= 10_000:
        raise ScenarioError(f"--steps {options.steps}: use 1 to 10000 measured steps, e.g. --steps 10")
    if not 1 <= options.warmup <= 100:
        raise ScenarioError(f"--warmup {options.warmup}: use 1 to 100 warm-up steps (the first step creates the "
                            f"optimizer state), e.g. --warmup 2")
    if options.gpu_index < 0:
        raise ScenarioError(f"--gpu-index {options.gpu_index}: use 0 for the first GPU")
    if options.nvml and not options.sample_hz >= 100:
        raise ScenarioError(f"--sample-hz {options.sample_hz:g}: sample at least 100 times a second to catch "
                            f"peaks, e.g. --sample-hz 500")


def _items(model, suite_path, layers, random_weights, kw) -> list:
    """The scenarios to measure, each with its config dict (and checkpoint folder)."""
    from pathlib import Path

    from profilers.suite import SuiteItem, suite_items

    if suite_path is not None:
        items = suite_items(suite_path, layers=layers)
        if random_weights:
            for it in items:
                it.checkpoint = None
        return items
    from dataclasses import replace

    from .models import load_config, shape_from_config

    shape, scenarios, _ = _build(model, None, kw)
    cfg = load_config(model, online=kw["online"], layers=layers)
    if layers is not None:
        shape = shape_from_config(cfg, name=f"{shape.name} ({layers} layers)", source=shape.source)
        scenarios = [replace(s, model=shape) for s in scenarios]
    folder = Path(model).expanduser()
    checkpoint = None
    if folder.is_dir() and not random_weights and any(folder.glob("*.safetensors")):
        checkpoint = str(folder)
    return [SuiteItem(s, cfg, checkpoint) for s in scenarios]


def _verify_checkpoints(items) -> None:
    """A model folder whose weights do not match its config.json is bad input: one line, before any run."""
    folders = {}
    for it in items:
        if it.checkpoint is not None and it.checkpoint not in folders:
            folders[it.checkpoint] = it
    if not folders:
        return
    from profilers.profile import verify_checkpoint

    for folder, it in folders.items():
        verify_checkpoint(it.config, it.scenario.recipe, folder)


def _machine(device, gpu_index, nvml, what, items):
    """(provenance, GpuSpec) of this machine; one line when it cannot profile (no GPU, libraries missing)."""
    import importlib.util

    for name in ("torch", "transformers", "peft"):
        if importlib.util.find_spec(name) is None:
            raise MissingDependencyError(f"{name} is not installed (needed to run the real step): "
                                         f"pip install 'vramplan[profile]'")
    from profilers.profile import NoGpuError, check_cuda, device_gpu_spec, needs_bitsandbytes, open_nvml, profile_env

    if any(needs_bitsandbytes(it.scenario.recipe) for it in items) and importlib.util.find_spec("bitsandbytes") is None:
        raise MissingDependencyError("bitsandbytes is not installed (QLoRA and 8-bit / paged optimizers need it): "
                                     "pip install 'vramplan[profile]', or use --method lora --optimizer adamw")
    if device == "cpu":
        return profile_env("cpu"), None
    try:
        check_cuda(gpu_index)
    except NoGpuError as exc:
        target = what if items and what and not str(what).endswith((".yaml", ".yml")) else "MODEL"
        raise NoGpuError(f"{exc}: `vramplan trace {target} --compare` measures the step's tensors on the CPU "
                         f"without a GPU, or add --device cpu to run this profiler on the CPU (small models)") from None
    nvdev = open_nvml(gpu_index) if nvml else None
    env = profile_env("cuda", gpu_index, nvml_device=nvdev)
    return env, device_gpu_spec(env, nvml_device=nvdev, gpu_index=gpu_index)


def _dry_run(items, gpu_text, *, warmup, steps, components, as_json):
    from dataclasses import replace

    from profilers.suite import estimate_seconds

    from .gpus import resolve_gpu
    from .plan import plan_scenario

    gpu = resolve_gpu(gpu_text)
    if not gpu.bf16_tflops:
        raise ScenarioError(f"--gpu {gpu_text}: the time estimate needs a catalogue card, e.g. --gpu h100")
    secs = estimate_seconds(items, gpu, warmup=warmup, steps=steps, components=components)
    plans = [plan_scenario(replace(it.scenario, gpu=gpu)) for it in items]
    if as_json:
        click.echo(json.dumps({"gpu": gpu.to_dict(), "total_seconds": round(sum(secs), 1), "scenarios": [
            {"label": it.label, "peak_bytes": b.peak_bytes, "fits": b.fits, "seconds": round(t, 1)}
            for it, b, t in zip(items, plans, secs)]}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    tab = Table("#", "scenario", "pred peak GiB", "fits", "est. s", box=None, pad_edge=False)
    for i, (it, b, t) in enumerate(zip(items, plans, secs), 1):
        tab.add_row(str(i), it.label, f"{b.peak_bytes / GiB:.2f}", "yes" if b.fits else "NO", f"{t:.0f}")
    con = Console()
    con.print(tab)
    con.print(f"{len(items)} scenarios, about {sum(secs) / 60:.1f} min on {gpu.name} ({warmup} warm-up + {steps} "
              f"timed steps each; step times from the speed model, setup estimated)")


def _gib(n) -> str:
    return "-" if n is None else f"{n / GiB:.2f}"


def _unit(values) -> tuple[str, int, int]:
    """(unit, bytes per unit, decimals): GiB with 3 decimals, or MiB with 2 when every figure is below 4 GiB
    (small models, CPU runs), so that small components do not all print as 0.00."""
    big = max((abs(int(v)) for v in values if v is not None), default=0)
    return ("GiB", GiB, 3) if big >= 4 * GiB else ("MiB", 2**20, 2)


def _num(v):
    """A measured value, or None when it was not measured (NaN / None)."""
    if v is None:
        return None
    try:
        if v != v:  # NaN
            return None
    except TypeError:
        return None
    return v


class _Printer:
    """Progress lines on stderr, and predicted vs measured for each finished scenario."""

    def __init__(self, *, as_json, suite, total, env):
        self.as_json = as_json
        self.suite = suite
        self.total = total
        self.env = env
        self.docs = []

    def __call__(self, event, index, item, detail):
        head = f"[{index + 1}/{self.total}] {item.label}"
        if event == "skip":
            click.echo(f"{head}: already in the file, skipped", err=True)
        elif event == "start":
            click.echo(f"{head}: measuring on {self.env['device']} ...", err=True)
        elif event == "done":
            breakdown, res, row = detail
            if self.as_json:
                self.docs.append(_json_entry(item, breakdown, res))
            elif self.suite:
                click.echo(_one_line(head, breakdown, res), err=True)
            else:
                _table(item, breakdown, res, self.env)

    def finish(self, result, out):
        if self.as_json:
            click.echo(json.dumps({"device": self.env, "results": self.docs}, indent=2, default=str))
        if out is not None:
            click.echo(f"appended {len(result.measured)} row(s) to {out}"
                       + (f"; {result.skipped} already there, skipped" if result.skipped else ""), err=True)
        if result.interrupted:
            click.echo(f"interrupted: {len(result.measured)} finished row(s) kept"
                       + (f" in {out}" if out else ""), err=True)


def _one_line(head, b, res) -> str:
    m = res.measured
    if res.status != "ok":
        return f"{head}: {res.status.upper()}: {res.error}"
    peak = _num(m.get("meas_peak_bytes"))
    pred = b.peak_bytes
    if peak is None:
        peak, pred, what = _num(m.get("meas_peak_tensor_bytes")), b.peak_tensor_bytes, "tensor peak"
    else:
        what = "device peak"
    diff = f" ({100 * (pred - peak) / peak:+.1f} %)" if peak else ""
    return (f"{head}: ok, {what} {_gib(peak)} GiB, predicted {_gib(pred)}{diff}; "
            f"{m.get('tokens_per_s', 0):.0f} tokens/s")


def _pred_speed(b):
    if b.scenario.gpu is None or not b.scenario.gpu.bf16_tflops:
        return None
    from .speed import estimate_speed

    return estimate_speed(b.scenario)


def _rows(b, res, env):
    """(item, predicted bytes, measured bytes) for the table, in the order of the step's views."""
    m = res.measured
    cpu = env["device"].startswith("cpu")
    load = next((p for p in b.phases if p.name == "load"), None)
    rows = [(c, b.components[c], _num(m.get(f"meas_{c}")))
            for c in ("weights", "quant_constants", "adapters", "gradients", "optimizer", "activations")]
    rows.append(("tensor peak", b.peak_tensor_bytes, _num(m.get("meas_peak_tensor_bytes"))))
    if load is not None:
        rows.append(("loaded, before the step", load.tensor_bytes if cpu else load.allocated_bytes,
                     _num(m.get("meas_loaded_bytes"))))
    if not cpu:
        rows += [
            ("allocated peak (torch)", b.peak_allocated_bytes, _num(m.get("meas_peak_allocated_bytes"))),
            ("reserved peak (torch)", b.peak_reserved_bytes, _num(m.get("meas_peak_reserved_bytes"))),
            ("CUDA context (NVML)", b.detail["cuda_context_bytes"], _num(m.get("meas_context_bytes"))),
            ("device peak (NVML)", b.peak_bytes, _num(m.get("meas_peak_bytes"))),
        ]
    return rows


def _table(item, b, res, env):
    from rich.console import Console
    from rich.table import Table

    con = Console()
    w = b.scenario.workload
    con.print(f"[bold]{b.method}[/bold] {b.scenario.model.name}  ·  seq {w.seq} × batch {w.batch}  ·  "
              f"{b.scenario.recipe.optimizer}  ·  {env['device']}")
    if res.status != "ok":
        con.print(f"{res.status.upper()}: {res.error}")
        return
    m = res.measured
    rows = _rows(b, res, env)
    unit, div, digits = _unit([v for _, p, q in rows for v in (p, q)])

    def fmt(n):
        return f"{n / div:.{digits}f}"

    tab = Table(unit, "predicted", "measured", "diff", "diff %", box=None, pad_edge=False)
    for name, pred, meas in rows:
        if meas is None:
            tab.add_row(name, fmt(pred), "-", "", "")
            continue
        diff = int(pred) - int(meas)
        pct = f"{100 * diff / meas:+.2f}" if meas else ""
        tab.add_row(name, fmt(pred), fmt(meas), fmt(diff), pct)
    est = _pred_speed(b)
    pred_tps = f"{est.tokens_per_second:,.0f}" if est else "-"
    pred_step = f"{est.step_seconds:.3f}" if est else "-"
    tab.add_row("step time (s)", pred_step, f"{m['step_time_s']:.3f}", "", "")
    tab.add_row("tokens/s", pred_tps, f"{m['tokens_per_s']:,.0f}", "", "")
    con.print(tab)
    info = res.info
    extra = [f"peak phase: predicted {b.peak_phase}, measured {m.get('meas_peak_phase', '-')}",
             f"median of {m['steps']} steps"]
    if "nvml_samples" in info:
        extra.append(f"NVML {info['nvml_samples']} samples at {info['nvml_rate_hz']:.0f} Hz")
    if "peak_active_bytes" in info:
        extra.append(f"torch active peak {_gib(info['peak_active_bytes'])} GiB")
    con.print("; ".join(extra))


def _json_entry(item, b, res) -> dict:
    return {"label": item.label, "method": b.method, "status": res.status, "error": res.error, "phase": res.phase,
            "predicted": {k: b.to_dict()[k] for k in ("components", "peak_bytes", "peak_reserved_bytes",
                                                       "peak_allocated_bytes", "peak_tensor_bytes", "peak_phase")},
            "measured": {k: (None if _num(v) is None else v) for k, v in res.measured.items()},
            "info": res.info}
