"""The step under torch.distributed FSDP (full shard), each rank's tensor memory recorded — the multi-GPU plan's referee.

Run under ``torchrun`` (``python -m torch.distributed.run --nproc_per_node N -m profilers.distributed ...``);
``run_fsdp`` launches it. Each rank builds the recipe with the shared builder (profilers/recipe.py), shards every
decoder layer and then the root module with FSDP2's ``fully_shard`` (the unit people use: one per decoder
layer), runs a warm-up optimizer step (the optimizer state exists, as in every step after the first), then one
traced step: forward with labels, backward, ``optimizer.step()``, ``zero_grad``. A ``LiveTracker`` counts the
rank's live storages (DTensors by their local shard) per phase. On CUDA it uses NCCL; on CPU, gloo, so CI runs
the whole path with two processes.

Rank 0 writes a JSON file: per rank, the tensor-level peak and the peak of each phase.

Known limitations: random weights; LoRA and full fine-tuning (sharding bitsandbytes 4-bit storage needs a
``bnb_4bit_quant_storage`` float dtype, which transformers sets only when loading; QLoRA under FSDP is refused
with a message).
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def _local(t):
    """The tensor whose storage a rank holds: a DTensor's local shard, or the tensor itself."""
    inner = getattr(t, "_local_tensor", None)
    return inner if inner is not None else t


def _rank_main(args) -> None:
    import warnings

    warnings.simplefilter("ignore")
    import torch
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    from vramplan.spec import Recipe

    from .recipe import build_skeleton, make_optimizer, materialize
    from .tracker import make_tracker

    cuda = torch.cuda.is_available() and args.device == "cuda"
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if cuda else "cpu"
    if cuda:
        torch.cuda.set_device(device)
    recipe = Recipe(**{k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(args.recipe).items()})
    config_dict = json.loads(open(args.config, encoding="utf-8").read())
    model, config = build_skeleton(config_dict, recipe)
    materialize(model, config, recipe, fake=False, device=device, seed=0)
    inner = model.base_model.model if recipe.trains_adapters else model
    for layer in inner.model.layers:
        fully_shard(layer)
    fully_shard(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, recipe)

    Tracker = make_tracker()
    tracker = Tracker(local=_local)
    with tracker:
        for p in model.parameters():
            tracker.register(_local(p), "adapters" if p.requires_grad and recipe.trains_adapters else "weights")
        for b in model.buffers():
            tracker.register(_local(b), "weights")
        tracker.enter("warmup", component="optimizer")
        for p in params:
            p.grad = torch.zeros_like(p)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        for state in optimizer.state.values():
            for v in state.values():
                if torch.is_tensor(v):
                    tracker.register(_local(v), "optimizer")
        hooks = [p.register_post_accumulate_grad_hook(lambda p: tracker.register(_local(p.grad), "gradients"))
                 for p in params]
        tracker.enter("load")
        head = model.get_output_embeddings()
        switch = head.register_forward_pre_hook(lambda *_: tracker.enter("loss") if tracker.phase == "forward"
                                                else None)
        tracker.enter("forward")
        g = torch.Generator().manual_seed(rank)
        ids = torch.randint(0, config.vocab_size, (args.batch, args.seq), generator=g).to(device)
        labels = ids.clone()
        attention_mask = torch.ones_like(ids)
        autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=recipe.autocast)
        with autocast:
            loss = model(input_ids=ids, labels=labels, use_cache=False).loss
        switch.remove()
        tracker.enter("backward")
        loss.backward()
        loss_value = float(loss.detach())
        del loss
        tracker.enter("optimizer", component="optimizer")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        del ids, labels, attention_mask
        tracker.enter("end")
        for h in hooks:
            h.remove()
    phases = {p.phase: {"peak_bytes": p.peak_bytes, "components": p.components}
              for p in tracker.phases.values() if p.phase in ("load", "forward", "loss", "backward", "optimizer")}
    mine = {"rank": rank, "peak_bytes": max(v["peak_bytes"] for v in phases.values()), "phases": phases,
            "loss": loss_value, "trainable_params_local": sum(_local(p).numel() for p in params)}
    gathered = [None] * world
    dist.all_gather_object(gathered, mine)
    if rank == 0:
        tmp = args.out + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"world_size": world, "backend": "nccl" if cuda else "gloo", "ranks": gathered}, f)
        os.replace(tmp, args.out)
    dist.barrier()  # no rank tears down while another is still in a collective
    dist.destroy_process_group()


def run_fsdp(scenario, config_dict: dict, *, nproc: int, device: str = "cpu", timeout: float = 600) -> dict:
    """Launch the FSDP step under torchrun with ``nproc`` processes; returns rank 0's JSON (every rank's bytes)."""
    import dataclasses
    import subprocess
    import tempfile

    from vramplan.errors import ScenarioError

    from .recipe import require

    require("torch", "transformers", "peft")
    r = scenario.recipe
    if r.quantized:
        raise ScenarioError("the FSDP run shards LoRA and full fine-tuning; QLoRA under FSDP needs a float "
                            "bnb_4bit_quant_storage that only loading a checkpoint sets: use --method lora")
    with tempfile.TemporaryDirectory() as tmp:
        cfg_path = os.path.join(tmp, "config.json")
        with open(cfg_path, "w", encoding="utf-8") as f:
            json.dump(config_dict, f)
        out = os.path.join(tmp, "out.json")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "profilers.distributed", "--config", cfg_path,
               "--recipe", json.dumps(dataclasses.asdict(r)), "--seq", str(scenario.workload.seq),
               "--batch", str(scenario.workload.batch), "--device", device, "--out", out]
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        # rank 0 writes the file atomically once every rank has reported: a failure in teardown after that
        # does not lose the measurement
        if not os.path.exists(out):
            tail = " ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])[:300]
            raise ScenarioError(f"the FSDP run failed (exit {proc.returncode}): {tail}")
        with open(out, encoding="utf-8") as f:
            return json.load(f)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--recipe", required=True)
    ap.add_argument("--seq", type=int, required=True)
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--out", required=True)
    _rank_main(ap.parse_args(argv))


if __name__ == "__main__":
    main()
