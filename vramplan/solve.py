"""Solvers over the memory model: the largest batch, sequence or rank that fits a card, the fewest cards
(DDP / FSDP) that fit a job, and the smallest catalogue card that fits.

Every answer is exact for the model in ``plan.py``: the solvers call ``plan_scenario`` and compare its
device-level ``peak_bytes`` (what nvidia-smi shows) with the capacity, so "fits" means the same thing as in
``vramplan plan``. They search rather than invert formulas, which keeps them correct whatever the model adds
later, and rely on one property the tests check on dense grids:

- ``peak_bytes`` never falls as ``seq`` or ``batch`` grows (every component is a sum of non-negative terms
  in the token count, the phase peak is a maximum of such sums);
- it never falls as ``rank`` grows, except below the rank at which every adapter tensor reaches the 4096
  elements from which bitsandbytes keeps 8-bit state (``memory.BNB_MIN_8BIT_SIZE``): just under it a
  tensor holds 8 B/element of fp32 state, just over it 2 B/element plus absmax, so the peak dips
  (Qwen2.5-0.5B, hidden 896: rank 4 -> 5). ``max_fit`` searches above that rank and scans below it.
  Paging (tensors of >= 100,000 elements) moves state from the allocator to managed memory; both are in
  ``peak_bytes``, so paging never makes the device peak fall (torch's allocated peak can fall: not searched).
- per-GPU ``peak_bytes`` never grows with the GPU count under FSDP (shares are ceil(x / n); the gathered
  unit and the reduce-scatter buffer do not depend on n); under DDP every GPU holds the whole job plus
  gradient buckets, so more cards never fit a job that one card does not.

Search: exponential growth from the smallest value, then bisection between the last fitting and the first
failing value: about 2*log2(limit/step) plans of ~0.1 ms each, a few milliseconds per answer.

Example usage::

    s = Scenario(load_model("8b"), Recipe.default("qlora"), Workload(seq=2048), resolve_gpu("rtx4090"))
    max_fit(s, "seq", step=256)      # the longest sequence (a multiple of 256) that fits a 4090
    min_gpus(s.with_(seq=32768))     # FSDP cards of that kind needed for 32k tokens
    smallest_gpu(s)                  # the smallest catalogue card that fits

Known Limitations: answers are as good as the memory model (see the README's "What is not modelled"); a
solver never adds headroom of its own: ``capacity_bytes`` is the budget, pass less to keep a margin.
"""

from __future__ import annotations

from dataclasses import replace

from . import memory as m
from .errors import ScenarioError
from .plan import plan_scenario
from .spec import OPTIMIZERS, Scenario

KNOBS = ("batch", "seq", "rank")
# The largest value each knob may take (spec.Workload.validate / Recipe.validate).
KNOB_LIMITS = {"batch": 65_536, "seq": 4_194_304, "rank": 4096}


def peak_bytes(scenario: Scenario) -> int:
    """Device-level peak of one scenario (the number every solver compares with the capacity)."""
    return int(plan_scenario(scenario).peak_bytes)


def _capacity(scenario: Scenario, capacity_bytes: int | None) -> int:
    if capacity_bytes is not None:
        if int(capacity_bytes) <= 0:
            raise ScenarioError(f"capacity {capacity_bytes} bytes: give a positive GPU memory size, e.g. --gpu 24gb")
        return int(capacity_bytes)
    if scenario.gpu is None:
        raise ScenarioError("no GPU memory to fit into: add --gpu, a card (rtx4090) or a size (24gb)")
    return int(scenario.gpu.memory_bytes)


def monotonic_rank_floor(scenario: Scenario) -> int:
    """The smallest rank from which ``peak_bytes`` never falls as the rank grows (1 for most recipes).

    With a bitsandbytes 8-bit optimizer, an adapter tensor of fewer than 4096 elements keeps fp32 state: the
    peak can fall when a rank step carries a tensor over that size. From the rank at which every adapter
    tensor has >= 4096 elements (rank x the tensor's other dimension), state is 8-bit everywhere and the
    peak only grows.
    """
    r = scenario.recipe
    impl, bits, _ = OPTIMIZERS[r.optimizer]
    if not (impl == "bnb" and bits == 8) or not r.trains_adapters:
        return 1
    floor = 1
    for numel_at_rank1, _count in m.lora_tensor_shapes(scenario.model, r, 1):
        floor = max(floor, m.cdiv(m.BNB_MIN_8BIT_SIZE, numel_at_rank1))
    return floor


def max_fit(scenario: Scenario, knob: str, capacity_bytes: int | None = None, *, step: int = 1,
            limit: int | None = None) -> int:
    """The largest value v of ``knob`` ("batch", "seq" or "rank"), a multiple of ``step``, such that
    ``plan_scenario(scenario.with_(**{knob: v})).peak_bytes <= capacity`` (default: the scenario's GPU).

    Returns 0 when even ``step`` does not fit. ``limit`` caps the search (default: the largest value the
    knob may take: 65536 for batch, 4194304 for seq, 4096 for rank). Raises ScenarioError for an unknown
    knob, a bad step or limit, a rank search on full fine-tuning, or when no capacity is known.
    """
    if knob not in KNOBS:
        raise ScenarioError(f"--max {knob!r}: use --max batch, --max seq or --max rank")
    if knob == "rank" and not scenario.recipe.trains_adapters:
        raise ScenarioError("--max rank needs a LoRA method: add --method lora or --method qlora")
    cap = _capacity(scenario, capacity_bytes)
    step = int(step)
    if step < 1:
        raise ScenarioError(f"step {step}: use a positive step, e.g. 1 or 256")
    top = KNOB_LIMITS[knob] if limit is None else min(int(limit), KNOB_LIMITS[knob])
    k_max = top // step  # search k in [1, k_max]; value = k * step
    if k_max < 1:
        raise ScenarioError(f"--step {step} is above the largest {knob} to search ({top}): use a smaller --step")

    def fits(k: int) -> bool:
        return peak_bytes(scenario.with_(**{knob: k * step})) <= cap

    k_lo = 1
    if knob == "rank":
        k_lo = min(k_max, m.cdiv(monotonic_rank_floor(scenario), step))
        if k_lo > 1 and not fits(k_lo):
            # below the floor the peak is not monotonic: scan down (at most 4096 / smallest dimension values)
            for k in range(k_lo - 1, 0, -1):
                if fits(k):
                    return k * step
            return 0
    if not fits(k_lo):
        return 0
    # exponential search: good fits; double until a value fails or the limit fits
    good, bad = k_lo, None
    while bad is None:
        if good == k_max:
            return good * step
        nxt = min(k_max, good * 2)
        if fits(nxt):
            good = nxt
        else:
            bad = nxt
    # bisection: good fits, bad does not
    while bad - good > 1:
        mid = (good + bad) // 2
        if fits(mid):
            good = mid
        else:
            bad = mid
    return good * step


def min_gpus(scenario: Scenario, shard: str = "fsdp", capacity_bytes: int | None = None, *,
             limit: int = 64) -> int | None:
    """The fewest GPUs (1..``limit``) on which the job fits per GPU with ``shard`` ("fsdp" or "ddp").

    One GPU is planned without sharding (with FSDP when the scenario offloads to the CPU). FSDP full shard divides weights, adapters, gradients and optimizer
    state, so the per-GPU peak falls with the count (bisection); DDP replicates the job on every GPU and
    adds gradient buckets, so it fits on n cards only when it fits on one. None when ``limit`` cards do
    not suffice (under FSDP the gathered unit and activations stay whole on every card).
    """
    if shard not in ("fsdp", "ddp"):
        raise ScenarioError(f"--shard {shard!r}: the GPU count is solved for --shard fsdp or --shard ddp")
    cap = _capacity(scenario, capacity_bytes)
    limit = int(limit)
    if not 1 <= limit <= 4096:
        raise ScenarioError(f"limit {limit}: search 1 to 4096 GPUs")

    offload = scenario.workload.offload  # FSDP's CPU offload applies on one GPU too

    def fits(n: int) -> bool:
        s = scenario.with_(gpus=n, shard=shard if n > 1 or offload else "none")
        return peak_bytes(s) <= cap

    if fits(1):
        return 1
    if shard == "ddp" or limit == 1 or not fits(limit):
        return None
    good, bad = limit, 1  # good fits, bad does not
    while good - bad > 1:
        mid = (good + bad) // 2
        if fits(mid):
            good = mid
        else:
            bad = mid
    return good


def smallest_gpu(scenario: Scenario, gpus=None):
    """The catalogue card with the least memory on which the scenario fits (ties: lower purchase price, then
    catalogue order); None when none does. ``gpus`` replaces the catalogue (any iterable of GpuSpec).

    Each card is planned as itself (sm90+ cards get larger cuBLAS workspaces), at the scenario's GPU count.
    """
    if gpus is None:
        from .gpus import catalog

        gpus = catalog()
    order = sorted(enumerate(gpus), key=lambda ig: (ig[1].memory_bytes,
                                                    ig[1].price_usd if ig[1].price_usd is not None else float("inf"),
                                                    ig[0]))
    for _, g in order:
        b = plan_scenario(replace(scenario, gpu=g))
        if b.peak_bytes <= g.memory_bytes:
            return g
    return None
