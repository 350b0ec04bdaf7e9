"""Benchmark: what the NVML sampler thread costs the training step it watches. Prints figures.

    python tests/benchmarks/bench_profile.py            # a GPU if there is one, else the CPU
    python tests/benchmarks/bench_profile.py --hz 1000

The same model and step as ``vramplan profile`` (a small Llama: 4 layers, hidden 512 on a GPU; 2 layers,
hidden 64 on the CPU), timed in alternating blocks of steps with and without the sampler running, so drift
(clocks, other load) hits both alike. On a GPU the sampler reads the real NVML; without one it reads a stand-in
whose every call blocks for 20 microseconds (a sleep standing in for the driver call; a real
``nvmlDeviceGetMemoryInfo`` costs what the driver makes it), so the figure is the thread's cost on the Python
side (GIL hand-offs), which is what the step can feel.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from types import SimpleNamespace


class _StandInNvml:
    """NVML with a 20 us blocking call and a constant answer (no driver on this machine)."""

    class NVMLError(Exception):
        pass

    def nvmlInit(self):
        pass

    def nvmlDeviceGetCount(self):
        return 1

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetName(self, h):
        return "stand-in NVML (CPU run)"

    def nvmlSystemGetDriverVersion(self):
        return "-"

    def nvmlDeviceGetMemoryInfo(self, h):
        time.sleep(20e-6)
        return SimpleNamespace(total=2**34, used=2**30, free=2**34 - 2**30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hz", type=float, default=500)
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--steps", type=int, default=5, help="steps per block")
    args = ap.parse_args()
    warnings.simplefilter("ignore")

    import torch

    from profilers.nvml import NvmlDevice, Sampler
    from profilers.profile import _build, _Phases, _train_step, open_nvml
    from vramplan.models import shape_from_config
    from vramplan.spec import Recipe, Scenario, Workload

    cuda = torch.cuda.is_available()
    if not cuda:
        torch.set_num_threads(1)  # a tiny model: threads only add scheduling noise to the comparison
    hidden, layers, seq = (512, 4, 1024) if cuda else (64, 2, 64)
    cfg = dict(model_type="llama", architectures=["LlamaForCausalLM"], hidden_size=hidden,
               intermediate_size=hidden * 4, num_hidden_layers=layers, num_attention_heads=8,
               num_key_value_heads=4, vocab_size=32000 if cuda else 512, max_position_embeddings=4096,
               tie_word_embeddings=False, dtype="bfloat16")
    shape = shape_from_config(cfg, name="bench")
    scenario = Scenario(shape, Recipe.default("lora"), Workload(seq=seq, batch=1))
    device = torch.device("cuda", 0) if cuda else torch.device("cpu")
    dev = open_nvml(0) if cuda else NvmlDevice.open(0, nvml=_StandInNvml())
    job = SimpleNamespace(config=cfg, checkpoint=None, seed=0)
    if not cuda:
        from profilers.patches import tracing_patches

        patches = tracing_patches(emulate_cuda_autocast=True)
        patches.__enter__()
    built, optimizer = _build(job, scenario.recipe, device)
    gen = torch.Generator(device=device).manual_seed(0)
    phases = _Phases()

    def step():
        t0 = time.perf_counter()
        _train_step(built.model, optimizer, scenario.recipe, scenario.workload, cfg["vocab_size"], device, gen, phases)
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    for _ in range(2):
        step()  # warm-up: optimizer state, kernels
    plain, sampled, rates = [], [], []
    for _ in range(args.blocks):
        plain += [step() for _ in range(args.steps)]
        s = Sampler(dev, hz=args.hz).start()
        sampled += [step() for _ in range(args.steps)]
        s.stop()
        rates.append(s.rate_hz)
    a, b = statistics.median(plain), statistics.median(sampled)
    where = torch.cuda.get_device_name(0) if cuda else "CPU (stand-in NVML)"
    print(f"device: {where}; model: {layers} layers, hidden {hidden}; seq {seq}; {args.blocks} x {args.steps} "
          f"steps each way")
    print(f"median step without sampler: {a * 1000:.1f} ms")
    print(f"median step with sampler at {args.hz:g} Hz: {b * 1000:.1f} ms "
          f"({100 * (b - a) / a:+.1f} %), sampling at {min(rates):.0f}-{max(rates):.0f} Hz achieved")


if __name__ == "__main__":
    main()
