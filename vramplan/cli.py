"""The ``vramplan`` command: parse, call one library function, format. Errors exit 2 with one line."""

from __future__ import annotations

import json
import sys

import click

from .errors import VramplanError

DEFAULT_COMMAND = "compare"

# Commands that live in their own modules, imported only when invoked (or listed by --help), so that
# `vramplan plan` never pays for them. Each module imports only click and vramplan at its top level.
LAZY_COMMANDS = {
    "trace": "vramplan.cli_trace:trace_cmd",
    "profile": "vramplan.cli_profile:profile_cmd",
    "sweep": "vramplan.cli_sweep:sweep_cmd",
    "report": "vramplan.cli_report:report_cmd",
}


class _DefaultGroup(click.Group):
    """``vramplan MODEL ...`` runs the compare command; ``vramplan plan MODEL ...`` runs plan."""

    def list_commands(self, ctx):
        names = set(self.commands)
        names.update(n for n in LAZY_COMMANDS if self._lazy(n) is not None)
        return sorted(names)

    def get_command(self, ctx, name):
        if name in self.commands:
            return self.commands[name]
        return self._lazy(name)

    @staticmethod
    def _lazy(name):
        import importlib
        import importlib.util

        target = LAZY_COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        if importlib.util.find_spec(module) is None:
            return None
        return getattr(importlib.import_module(module), attr)

    def resolve_command(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in LAZY_COMMANDS and not args[0].startswith("-"):
            args = [DEFAULT_COMMAND, *args]
        return super().resolve_command(ctx, args)

    def format_usage(self, ctx, formatter):
        formatter.write_usage("vramplan", "MODEL [--gpu G] [KNOBS] | COMMAND [ARGS]")


def _knobs(f):
    """The recipe and workload options shared by every command (DESIGN.md: same knobs everywhere)."""
    options = [
        click.option("--method", default="both", show_default=True,
                     type=click.Choice(["lora", "qlora", "full", "both"]), help="Fine-tuning method; both = lora and qlora."),
        click.option("--seq", type=int, default=2048, show_default=True, help="Sequence length (tokens per sample)."),
        click.option("--batch", type=int, default=1, show_default=True, help="Micro-batch size per GPU."),
        click.option("--rank", type=int, default=16, show_default=True, help="LoRA rank r."),
        click.option("--alpha", type=float, default=32.0, show_default=True, help="LoRA alpha (does not change memory)."),
        click.option("--dropout", type=float, default=0.05, show_default=True, help="LoRA dropout probability."),
        click.option("--targets", default="all-linear", show_default=True,
                     help="LoRA target modules: all-linear or a comma list such as q_proj,v_proj."),
        click.option("--adapter-dtype", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32",
                     show_default=True, help="Adapter weights dtype (peft autocast_adapter_dtype=True gives fp32)."),
        click.option("--dtype", type=click.Choice(["bf16", "fp16"]), default="bf16", show_default=True,
                     help="Dtype the base model is loaded and computed in."),
        click.option("--quant", type=click.Choice(["nf4", "fp4"]), default="nf4", show_default=True,
                     help="4-bit data type (QLoRA)."),
        click.option("--double-quant/--no-double-quant", default=True, show_default=True,
                     help="Quantize the quantization constants too (QLoRA)."),
        click.option("--blocksize", type=int, default=64, show_default=True, help="4-bit quantization block size."),
        click.option("--kbit-prep/--no-kbit-prep", default=True, show_default=True,
                     help="peft prepare_model_for_kbit_training (fp32 upcast of non-4-bit weights) for QLoRA."),
        click.option("--optimizer", default=None,
                     help="adamw (torch fused, LoRA default), adamw_torch (foreach), adamw_8bit, paged_adamw_8bit, "
                          "adamw_32bit, paged_adamw_32bit (QLoRA default), sgd."),
        click.option("--grad-ckpt/--no-grad-ckpt", default=True, show_default=True, help="Gradient checkpointing."),
        click.option("--attn", type=click.Choice(["sdpa", "eager", "flash"]), default="sdpa", show_default=True,
                     help="Attention implementation."),
        click.option("--autocast/--no-autocast", default=True, show_default=True,
                     help="Mixed precision autocast around forward and loss (Trainer bf16=True)."),
        click.option("--gpus", type=int, default=1, show_default=True, help="Number of GPUs (memory is per GPU)."),
        click.option("--shard", type=click.Choice(["none", "ddp", "fsdp"]), default="none", show_default=True,
                     help="How several GPUs share the job."),
        click.option("--online", is_flag=True, help="Allow reading a Hub id's config.json from the Hugging Face Hub."),
    ]
    for opt in reversed(options):
        f = opt(f)
    return f


def _build(model: str, gpu: str | None, kw: dict):
    """Turn CLI values into (ModelShape, [Scenario], GpuSpec|None). All validation errors are VramplanError."""
    from .gpus import resolve_gpu
    from .models import load_model
    from .spec import Workload

    Workload(seq=kw["seq"], batch=kw["batch"], gpus=kw["gpus"], shard=kw["shard"],
             offload=kw.get("offload", False)).validate()  # bad numbers first, before any file is read
    gpu_spec = resolve_gpu(gpu) if gpu is not None else None
    shape = load_model(model, online=kw["online"])
    return shape, scenarios_for(shape, gpu_spec, kw), gpu_spec


def scenarios_for(shape, gpu_spec, kw: dict) -> list:
    """The scenarios the knobs describe for a loaded model, one per method (the CLI and the screen share it)."""
    from dataclasses import replace

    from .spec import Recipe, Scenario, Workload

    methods = ("lora", "qlora") if kw["method"] == "both" else (kw["method"],)
    targets = tuple(t.strip() for t in kw["targets"].split(",") if t.strip()) or ("all-linear",)
    workload = Workload(seq=kw["seq"], batch=kw["batch"], gpus=kw["gpus"], shard=kw["shard"],
                        offload=kw.get("offload", False))
    workload.validate()
    dropout = kw["dropout"]
    if shape.is_moe and kw.get("dropout_is_default") and kw["targets"] == "all-linear":
        dropout = 0.0  # peft cannot apply dropout to fused experts: the tutorial default would not start
    scenarios = []
    for method in methods:
        base = Recipe.default(method)
        recipe = replace(
            base,
            dtype=kw["dtype"], quant=kw["quant"], double_quant=kw["double_quant"], blocksize=kw["blocksize"],
            kbit_prep=kw["kbit_prep"] if method == "qlora" else False, rank=kw["rank"], alpha=kw["alpha"],
            dropout=dropout, targets=targets, adapter_dtype=kw["adapter_dtype"],
            optimizer=kw["optimizer"] or base.optimizer, grad_ckpt=kw["grad_ckpt"], attn=kw["attn"],
            autocast=kw["autocast"],
        )
        recipe.validate()
        scenarios.append(Scenario(shape, recipe, workload, gpu_spec))
    return scenarios


def _plans(model, gpu, kw):
    from .plan import plan_scenario

    ctx = click.get_current_context()
    kw = dict(kw, dropout_is_default=ctx.get_parameter_source("dropout") == click.core.ParameterSource.DEFAULT)
    shape, scenarios, gpu_spec = _build(model, gpu, kw)
    return shape, [plan_scenario(s) for s in scenarios], gpu_spec


def plan_json(shape, plans, gpu_spec) -> dict:
    """The JSON contract of ``vramplan plan --json`` (DESIGN.md)."""
    w = plans[0].scenario.workload
    return {
        "model": shape.to_dict(),
        "gpu": gpu_spec.to_dict() if gpu_spec else None,
        "workload": {"seq": w.seq, "batch": w.batch, "tokens": w.tokens, "gpus": w.gpus, "shard": w.shard,
                     "offload": w.offload},
        "plans": [p.to_dict() for p in plans],
        "modelled_versions": {"torch": "2.13", "transformers": "5.23.0", "peft": "0.21.2", "bitsandbytes": "0.50.2"},
    }


@click.group(cls=_DefaultGroup, context_settings={"help_option_names": ["-h", "--help"]},
             invoke_without_command=True)
@click.version_option(package_name="vramplan")
@click.pass_context
def cli(ctx):
    """Will this LoRA / QLoRA fine-tuning job fit on that GPU? Every byte of the training step, predicted.

    Example:

        vramplan 7b --gpu 24gb

        vramplan plan 8b --seq 4096 --batch 2 --rank 64 --json
    """
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


@cli.command("compare")
@click.argument("model")
@click.option("--gpu", default=None, help="A card (rtx4090, a100-80gb, h100) or a size (24gb = 24 GiB).")
@click.option("--json", "as_json", is_flag=True, help="Print the plan JSON instead of the table.")
@click.option("--no-tui", is_flag=True, help="Print the comparison table even on a terminal.")
@_knobs
def compare_cmd(model, gpu, as_json, no_tui, **kw):
    """LoRA vs QLoRA side by side: components, peak, verdict (the main job). On a terminal it opens the
    interactive screen (every knob editable, what fits, the step's memory over time); piped, or with
    --no-tui or --json, it prints the table.

    Example:

        vramplan 7b --gpu 24gb
    """
    shape, plans, gpu_spec = _plans(model, gpu, kw)
    if as_json:
        click.echo(json.dumps(plan_json(shape, plans, gpu_spec), indent=2))
        return
    if not no_tui and sys.stdin.isatty() and sys.stdout.isatty():
        from .tui.app import run_app  # textual is imported only here

        ctx = click.get_current_context()
        dropout_default = ctx.get_parameter_source("dropout") == click.core.ParameterSource.DEFAULT
        run_app(model, gpu, dict(kw, dropout_is_default=dropout_default), shapes={model.strip(): shape})
        return
    from .table import render_comparison

    render_comparison(shape, plans, gpu_spec)


@cli.command("plan")
@click.argument("model")
@click.option("--gpu", default=None, help="A card (rtx4090, a100-80gb, h100) or a size (24gb = 24 GiB).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (integer bytes) instead of a table.")
@click.option("--max", "max_knob", type=click.Choice(["seq", "batch", "rank"]), default=None,
              help="Solve for the largest sequence length, micro-batch or LoRA rank that fits --gpu.")
@click.option("--step", type=int, default=1, show_default=True, help="With --max: answer a multiple of this.")
@click.option("--offload", is_flag=True,
              help="FSDP CPU offload of parameters, gradients and optimizer (with --shard fsdp; one GPU works too).")
@_knobs
def plan_cmd(model, gpu, as_json, max_knob, step, **kw):
    """The analytical plan of one or both methods; with --max, the largest seq / batch / rank that fits.

    Example:

        vramplan plan meta-llama/Llama-3.1-8B --seq 4096 --batch 2 --rank 64 --json

        vramplan plan 8b --max seq --gpu 24gb
    """
    if max_knob is not None:
        return _plan_max(model, gpu, as_json, max_knob, step, kw)
    shape, plans, gpu_spec = _plans(model, gpu, kw)
    if as_json:
        click.echo(json.dumps(plan_json(shape, plans, gpu_spec), indent=2))
        return
    from .table import render_comparison

    render_comparison(shape, plans, gpu_spec, timeline=True)


def _plan_max(model, gpu, as_json, knob, step, kw):
    """``vramplan plan --max KNOB``: solve per method, then plan at the answer."""
    from .errors import ScenarioError
    from .plan import plan_scenario
    from .solve import KNOB_LIMITS, max_fit

    if gpu is None:
        raise ScenarioError(f"--max {knob} needs a GPU to fit into: add --gpu, e.g. --gpu 24gb or --gpu rtx4090")
    if step < 1:
        raise ScenarioError(f"--step {step}: use a positive step, e.g. --step 256")
    ctx = click.get_current_context()
    kw = dict(kw, dropout_is_default=ctx.get_parameter_source("dropout") == click.core.ParameterSource.DEFAULT)
    shape, scenarios, gpu_spec = _build(model, gpu, kw)
    if knob == "rank":
        scenarios = [s for s in scenarios if s.recipe.trains_adapters]
        if not scenarios:
            raise ScenarioError("--max rank needs a LoRA method: use --method lora, qlora or both")
    results = []
    for s in scenarios:
        v = max_fit(s, knob, step=step)
        plan = plan_scenario(s.with_(**{knob: v})) if v else None
        above = None
        if v and v + step <= KNOB_LIMITS[knob]:
            above = plan_scenario(s.with_(**{knob: v + step})).peak_bytes
        results.append((s.recipe.method, v, plan, above))
    if as_json:
        plans = [p for _, _, p, _ in results if p is not None]
        out = plan_json(shape, plans, gpu_spec) if plans else {"model": shape.to_dict(), "gpu": gpu_spec.to_dict(),
                                                               "plans": []}
        for entry, plan in zip(out["plans"], plans):
            w = plan.scenario.workload
            entry["workload"] = {"seq": w.seq, "batch": w.batch, "tokens": w.tokens, "gpus": w.gpus, "shard": w.shard,
                                 "offload": w.offload}
        out["max"] = {"knob": knob, "step": step, "capacity_bytes": gpu_spec.memory_bytes,
                      "values": {m: v for m, v, _, _ in results},
                      "peak_above_bytes": {m: a for m, _, _, a in results}}
        click.echo(json.dumps(out, indent=2))
        return
    from .table import render_max

    render_max(shape, knob, results, gpu_spec.memory_bytes, step, scenarios[0].workload)


@cli.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def models_cmd(as_json):
    """The model catalogue and the shorthands.

    Example:

        vramplan models
    """
    from .table import render_models

    render_models(as_json)


@cli.command("gpus")
@click.argument("model", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV (every field).")
@click.option("--tokens", default="100M", show_default=True,
              help="Training tokens for the hours and rental cost of a run: 100M, 1.5B, 2e8.")
@click.option("--budget", type=float, default=None,
              help="Keep options whose cards cost at most this many USD to buy (catalogue purchase prices).")
@click.option("--all", "show_all", is_flag=True, help="Also list the cards on which the job does not fit.")
@click.option("--offload", is_flag=True, help="Plan every option with FSDP CPU offload (parameters, gradients, "
              "optimizer in CPU memory), one card included.")
@_knobs
def gpus_cmd(model, as_json, as_csv, tokens, budget, show_all, **kw):
    """The GPU catalogue; with a MODEL, which card (and how many) to buy or rent for that job.

    For every card and method: the cards needed (1, or 2 / 4 / 8 with FSDP), memory to spare, the largest
    batch and sequence length that fit, tokens/s, hours and rental cost for --tokens, purchase price;
    sorted by the recommendation, each pick with the reason. --gpus / --shard are chosen, not given.

    Example:

        vramplan gpus

        vramplan gpus 70b

        vramplan gpus 8b --seq 8192 --budget 2000
    """
    from .errors import ScenarioError

    if model is None:
        if as_csv:
            from .table import gpus_csv

            click.echo(gpus_csv(), nl=False)
            return
        from .table import render_gpus

        render_gpus(as_json)
        return
    if as_json and as_csv:
        raise ScenarioError("--json and --csv together: pick one")
    if kw["gpus"] != 1 or kw["shard"] != "none":
        raise ScenarioError("vramplan gpus chooses the GPU count itself (1, or 2 / 4 / 8 with FSDP): drop --gpus and "
                            "--shard, or use `vramplan plan MODEL --gpus N --shard fsdp --gpu CARD`")
    from .advise import advise, parse_tokens
    from .plan import recipe_dict

    n_tokens = parse_tokens(tokens)
    if kw["offload"]:
        kw = dict(kw, shard="fsdp")  # CPU offload is FSDP's, on one card too
    ctx = click.get_current_context()
    kw = dict(kw, dropout_is_default=ctx.get_parameter_source("dropout") == click.core.ParameterSource.DEFAULT)
    shape, scenarios, _ = _build(model, None, kw)
    options = advise(scenarios, tokens=n_tokens, budget_usd=budget)
    if as_json:
        w = scenarios[0].workload
        from . import speed
        from .advise import HEADROOM_FRACTION
        from .gpus import catalog_about

        click.echo(json.dumps({"model": shape.to_dict(),
                               "workload": {"seq": w.seq, "batch": w.batch, "offload": w.offload},
                               "recipes": [recipe_dict(s.recipe) for s in scenarios],
                               "tokens": n_tokens, "budget_usd": budget, "headroom_fraction": HEADROOM_FRACTION,
                               "speed_assumptions": {"matmul_efficiency": speed.MATMUL_EFFICIENCY,
                                                     "bandwidth_efficiency": speed.BANDWIDTH_EFFICIENCY,
                                                     "link_efficiency": speed.LINK_EFFICIENCY},
                               "catalogue": catalog_about(),
                               "options": [o.to_dict() for o in options]}, indent=2))
        return
    if as_csv:
        from .table import advice_csv

        click.echo(advice_csv(options), nl=False)
        return
    from .table import render_advice

    r = scenarios[-1].recipe
    knobs = f"seq {kw['seq']} × batch {kw['batch']}, r={r.rank}" + (", grad-ckpt" if r.grad_ckpt else "")
    if budget is not None:
        knobs += f", ≤ ${budget:,.0f} to buy"
    render_advice(shape, options, tokens=n_tokens, knobs=knobs, show_all=show_all, budget=budget)


@cli.command("env")
def env_cmd():
    """Versions of Python, torch, CUDA, the driver and the Hugging Face stack, to paste into issues.

    Example:

        vramplan env
    """
    from .environment import environment

    for k, v in environment().items():
        click.echo(f"{k}: {v}")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def main(argv=None) -> int:
    """Console entry point: run the CLI; user errors print one line and exit 2, never a traceback."""
    try:
        cli.main(args=argv, prog_name="vramplan", standalone_mode=False)
    except VramplanError as exc:
        click.echo(f"vramplan: error: {_one_line(exc)}", err=True)
        return 2
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else "", err=True)
        return 2
    except click.UsageError as exc:
        hint = " (see vramplan --help)"
        click.echo(f"vramplan: error: {_one_line(exc.format_message())}{hint}", err=True)
        return 2
    except click.Abort:
        click.echo("vramplan: interrupted", err=True)
        return 130
    except click.ClickException as exc:
        click.echo(f"vramplan: error: {_one_line(exc.format_message())}", err=True)
        return 2
    except BrokenPipeError:
        return 0
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
