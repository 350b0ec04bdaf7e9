"""How fast a LoRA / QLoRA step runs on a card: FLOPs per token, a roofline step time, tokens/s, hours.

A first-principles model with stated efficiencies, to be calibrated by profiles (``vramplan profile``
records step time and tokens/s). Nothing here imports torch or numpy.

**FLOPs** (multiply-add = 2 FLOPs), per trained token, for a frozen base with LoRA adapters:

- forward, matmuls: ``2 * N_lin`` for the decoder linears (MoE: the router, plus ``top_k / experts`` of the
  expert weights) and ``2 * V * h`` for the lm_head (tied or not, it is a matmul);
- forward, attention: ``QK^T`` and ``AV`` per layer, ``2 * 2 * q_dim * S_ctx``, where ``S_ctx`` is the keys a
  query sees: ``(S + 1) / 2`` on average for causal SDPA / flash kernels, which skip masked blocks, and ``S``
  for eager attention, which multiplies the full square (sliding windows are not modelled);
- forward, adapters: ``2 * (r*in + r*out)`` per adapted module (``2 * n_adapter_params``; MoE expert adapters
  scaled by ``top_k / experts``);
- backward, frozen base: only activation gradients, ``dX = dY W``: ``2 * N_lin + 2 * V * h``, no weight
  gradients (full fine-tuning adds them: ``4 * N`` in all);
- backward, attention: flash / memory-efficient kernels recompute the scores: 5 matmuls for the forward's 2,
  ``2.5x`` the forward attention; eager keeps the probabilities: ``2x``;
- backward, adapters: activation gradients through B and A plus weight gradients of both: ``4 * n_adapter_params``;
- gradient checkpointing recomputes each decoder layer's forward once in backward (not the lm_head): for full
  fine-tuning that is the textbook +33 % (2N on 6N), for a frozen base +50 % of the matmul work (2N on 4N).

Element-wise work (norms, activations, softmax, the loss) is not counted: it is memory-bound and small
next to the matmuls at training token counts, and the efficiency factor absorbs it.

**Time** of one step on one GPU (micro-batch ``T = batch * seq`` tokens):

- ``compute = FLOPs / (bf16 dense peak * MFU)`` with ``MFU`` = ``MATMUL_EFFICIENCY`` (0.40);
- ``weight reads = uses * bytes of the 16-bit weights / (bandwidth * BANDWIDTH_EFFICIENCY)``: every GEMM reads
  its weight once per use; uses = forward + backward (+ recompute);
- the roofline: a step takes ``max(compute, weight reads, communication)``: weight reads overlap compute
  inside the GEMMs, and FSDP / DDP overlap communication with compute (prefetch, bucketed all-reduce);
- plus **dequantization** (QLoRA): bitsandbytes dequantizes every 4-bit weight to bf16 before each use, a
  separate memory-bound kernel: it reads the packed weight (n/2 B) and its constants, writes 2n B. It adds
  ``uses * (n/2 + 2n + constants) / (bandwidth * BANDWIDTH_EFFICIENCY)`` and does not overlap;
- **communication** per step and GPU: FSDP all-gathers the parameters twice (forward, and backward after the
  forward reshard) and reduce-scatters the gradients; DDP all-reduces the gradients (``2 (n-1)/n`` of them);
  on the catalogue's ``interconnect_gbps`` times ``LINK_EFFICIENCY``; with FSDP CPU offload each GPU also
  copies its parameter shard in twice and its gradient shard out, on ``host_link_gbps`` (PCIe), and the
  optimizer step runs on the CPU (its time is not modelled).

tokens/s = ``gpus * T / step time`` (data parallel: each GPU runs its own micro-batch).

Example usage::

    est = estimate_speed(Scenario(load_model("8b"), Recipe.default("qlora"), Workload(2048, 4), resolve_gpu("rtx4090")))
    est.tokens_per_second, est.seconds_for(100_000_000) / 3600

Known Limitations: the efficiency factors are stated guesses until profiles calibrate them; the optimizer step,
the data loader, kernel launch latency (small batches on fast cards), thermal limits and NCCL staging through
host memory on GeForce cards are not modelled; T4 and V100 carry their FP16 tensor rate (no bf16).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import memory as m
from .errors import ScenarioError
from .spec import Scenario

# Fraction of the dense bf16 tensor peak the step's matmuls reach (model FLOPs utilisation). 0.40 is a
# typical figure for LoRA fine-tuning with Hugging Face + SDPA on one GPU (published MFU for well-tuned
# pre-training is 0.40-0.55, e.g. PaLM 46 %, Llama 3 38-43 %); profiles calibrate it.
MATMUL_EFFICIENCY = 0.40
# Fraction of the datasheet memory bandwidth a streaming kernel (dequantization, weight reads) reaches.
BANDWIDTH_EFFICIENCY = 0.80
# Fraction of the interconnect's per-direction bandwidth NCCL collectives reach (bus bandwidth).
LINK_EFFICIENCY = 0.70
# Interconnect assumed when the GPU has no catalogue entry (a bare size): PCIe 4.0 x16 per direction.
DEFAULT_LINK_GBPS = 31.5


@dataclass(frozen=True)
class SpeedEstimate:
    """Step time and throughput of one scenario on one card (per GPU figures; tokens/s over all GPUs).

    Example usage::

        est = estimate_speed(scenario)
        est.tokens_per_second, est.bound, est.seconds_for(1e8)

    Known Limitations: see the module docstring.
    """

    flops_per_token: dict
    tokens_per_step: int  # per GPU
    gpus: int
    compute_seconds: float
    weight_read_seconds: float
    dequant_seconds: float
    comm_seconds: float
    step_seconds: float
    bound: str  # "compute" | "memory" | "communication"
    assumptions: dict = field(default_factory=dict)

    @property
    def tokens_per_second(self) -> float:
        return self.gpus * self.tokens_per_step / self.step_seconds

    def seconds_for(self, tokens: float) -> float:
        """Wall-clock seconds to train on ``tokens`` tokens (all GPUs together)."""
        if tokens < 0:
            raise ScenarioError(f"--tokens {tokens}: use a positive number of training tokens, e.g. --tokens 100M")
        return tokens / self.tokens_per_second

    def to_dict(self) -> dict:
        return {
            "flops_per_token": {k: int(v) for k, v in self.flops_per_token.items()},
            "tokens_per_step_per_gpu": int(self.tokens_per_step),
            "gpus": self.gpus,
            "compute_seconds": self.compute_seconds,
            "weight_read_seconds": self.weight_read_seconds,
            "dequant_seconds": self.dequant_seconds,
            "comm_seconds": self.comm_seconds,
            "step_seconds": self.step_seconds,
            "tokens_per_second": self.tokens_per_second,
            "bound": self.bound,
            "assumptions": dict(self.assumptions),
        }


def _linear_params(model) -> tuple[int, int]:
    """(active decoder-linear parameters per token, all decoder-linear parameters): MoE experts count
    ``top_k / experts`` toward the active ones."""
    active = total = 0
    for g in model.groups:
        if g.kind in ("linear", "router"):
            n = g.numel * g.count
            active += n
            total += n
        elif g.kind == "experts":
            n = g.numel * g.count
            active += n * model.experts_per_token // model.num_experts
            total += n
    return active, total


def _adapter_params(model, recipe) -> int:
    """Adapter parameters a token goes through (expert adapters scaled by top_k / experts)."""
    n = 0
    for g in m.lora_groups(model, recipe):
        experts, in_f, out_f = g.lora_in_out
        per = recipe.rank * g.lora_rank_mult * experts * (in_f + out_f) * g.count
        if g.kind == "experts":
            per = per * model.experts_per_token // model.num_experts
        n += per
    return n


def flops_per_token(scenario: Scenario) -> dict:
    """FLOPs per trained token of one step, by term (see the module docstring); ``total`` is their sum."""
    model, r, w = scenario.model, scenario.recipe, scenario.workload
    lin, _ = _linear_params(model)
    head = model.vocab_size * model.hidden_size
    attn_impl = m.effective_attn(model, r)
    s_ctx2 = 2 * w.seq if attn_impl == "eager" else w.seq + 1  # 2 x keys seen per query
    attn_fwd = 2 * model.q_dim * s_ctx2 * model.num_layers  # 4 * q_dim * S_ctx per layer
    attn_bwd = attn_fwd * 2 if attn_impl == "eager" else attn_fwd * 5 // 2
    adapters = _adapter_params(model, r) if r.trains_adapters else 0
    full = r.method == "full"
    out = {
        "forward_linear": 2 * lin,
        "forward_head": 2 * head,
        "forward_attention": attn_fwd,
        "forward_adapters": 2 * adapters,
        "backward_linear": (4 if full else 2) * lin,
        "backward_head": (4 if full else 2) * head,
        "backward_attention": attn_bwd,
        "backward_adapters": 4 * adapters,
        "recompute": (2 * lin + attn_fwd + 2 * adapters) if r.grad_ckpt else 0,
    }
    out["total"] = sum(out.values())
    return out


def _links(gpu) -> tuple[str, float, float]:
    """(interconnect name, GPU-to-GPU GB/s, GPU-to-CPU GB/s) per direction from the catalogue."""
    from .gpus import _raw_catalog

    for e in _raw_catalog()["gpus"]:
        if e["id"] == gpu.id and e.get("interconnect_gbps"):
            return e["interconnect"], float(e["interconnect_gbps"]), float(e.get("host_link_gbps") or DEFAULT_LINK_GBPS)
    return "PCIe 4.0 x16 (assumed)", DEFAULT_LINK_GBPS, DEFAULT_LINK_GBPS


def estimate_speed(scenario: Scenario, gpu=None, *, matmul_efficiency: float = MATMUL_EFFICIENCY,
                   bandwidth_efficiency: float = BANDWIDTH_EFFICIENCY,
                   link_efficiency: float = LINK_EFFICIENCY) -> SpeedEstimate:
    """Step time and tokens/s of the scenario on ``gpu`` (default: the scenario's GPU).

    The efficiencies default to the stated constants; a calibration from measured profiles passes its own.
    Raises ScenarioError when the card has no bf16 TFLOP/s or bandwidth (a bare size such as ``24gb``), or
    for an efficiency outside (0, 1].
    """
    for name, value in (("matmul_efficiency", matmul_efficiency), ("bandwidth_efficiency", bandwidth_efficiency),
                        ("link_efficiency", link_efficiency)):
        if not 0 < value <= 1:
            raise ScenarioError(f"{name} {value}: use a fraction of the peak in (0, 1], e.g. 0.4")
    gpu = gpu or scenario.gpu
    if gpu is None or not gpu.bf16_tflops or not gpu.bandwidth_gbps:
        what = "no GPU" if gpu is None else f"{gpu.name} has no TFLOP/s or bandwidth figure"
        raise ScenarioError(f"speed needs a catalogue card ({what}): use e.g. --gpu rtx4090 (`vramplan gpus` lists them)")
    model, r, w = scenario.model, scenario.recipe, scenario.workload
    fpt = flops_per_token(scenario)
    tokens = w.seq * w.batch
    compute = fpt["total"] * tokens / (gpu.bf16_tflops * 1e12 * matmul_efficiency)

    bw = gpu.bandwidth_gbps * 1e9 * bandwidth_efficiency
    uses = 3 if r.grad_ckpt else 2  # forward, backward (dX), recompute
    _, lin_all = _linear_params(model)
    head = model.vocab_size * model.hidden_size
    # the GEMMs read 16-bit weights (bf16 / fp16 base, or bf16 just dequantized); lm_head: forward and backward
    weight_reads = (uses * lin_all * 2 + 2 * head * 2) / bw
    dequant = 0.0
    if r.quantized:
        q_numel = sum(g.numel * g.count for g in model.groups if g.quantized)
        dq_bytes = q_numel // 2 + 2 * q_numel + m.quant_constant_bytes(model, r)
        dequant = uses * dq_bytes / bw

    comm = 0.0
    n = w.gpus
    link_name, link, host = _links(gpu)
    grads = m.gradient_bytes(model, r, r.rank)
    params = m.base_weight_bytes(model, r) + m.lora_adapter_bytes(model, r, r.rank)
    if n > 1:
        frac = (n - 1) / n
        volume = frac * (2 * params + grads) if w.shard == "fsdp" else 2 * frac * grads
        comm = volume / (link * 1e9 * link_efficiency)
    if w.offload:
        # each GPU copies its parameter shard to the GPU for the forward and the backward gathers and its
        # gradient shard back to the CPU, over its own PCIe link (the CPU optimizer step is not modelled)
        comm += (2 * params + grads) / n / (host * 1e9 * link_efficiency)

    overlapped = max(compute, weight_reads, comm)
    # what limits the step: the largest of the matmuls, the memory traffic (weight reads + dequantization), the links
    limits = {"compute": compute, "memory": weight_reads + dequant, "communication": comm}
    bound = max(limits, key=limits.get)
    return SpeedEstimate(
        flops_per_token=fpt,
        tokens_per_step=tokens,
        gpus=n,
        compute_seconds=compute,
        weight_read_seconds=weight_reads,
        dequant_seconds=dequant,
        comm_seconds=comm,
        step_seconds=overlapped + dequant,
        bound=bound,
        assumptions={
            "matmul_efficiency": matmul_efficiency,
            "bandwidth_efficiency": bandwidth_efficiency,
            "link_efficiency": link_efficiency,
            "bf16_tflops": gpu.bf16_tflops,
            "bandwidth_gbps": gpu.bandwidth_gbps,
            **({"interconnect": link_name, "interconnect_gbps": link} if n > 1 else {}),
            **({"host_link_gbps": host} if w.offload else {}),
        },
    )
