"""Which card to buy or rent for a job: every catalogue card (and how many), what each allows, how fast, what
it costs, and a recommendation that says why.

For each card and method: the job is planned on one card; when it does not fit, on the smallest FSDP
count among 2, 4 and 8 that fits (``solve.min_gpus``, rounded up to the node sizes machines come in). At that
count: the headroom, the largest micro-batch and sequence length that fit at the other knobs
(``solve.max_fit``), tokens/s (``speed.estimate_speed``), the hours and the rental cost of training on
``tokens`` tokens, the rental cost per million tokens, and the purchase price of the cards.

Prices are the catalogue's (``vramplan/catalog/gpus.json``: launch MSRP or street price to buy, typical
single-GPU on-demand list price to rent, dated, with the basis per card). They are estimates: check a quote.

Recommendations (each option gets the labels it earns, with one line saying why):

- ``buy``: the lowest purchase price among options that fit with at least ``HEADROOM_FRACTION`` (10 %) of
  the card's memory to spare (the model's stated estimates — allocator slack, CUDA context — need a margin);
  cards without bf16 (T4, V100) are never picked for a bf16 recipe (use ``--dtype fp16`` for them);
- ``rent``: the lowest rental cost per million training tokens (the fastest per dollar) among options with
  that headroom;
- ``fastest``: the most tokens/s among options with that headroom.

Rows are sorted: options with the headroom first, then by rental cost per million tokens (cards without a
rental price after those with one, by purchase price), then options that fit with less headroom, then cards
on which the job does not fit even on 8.

Example usage::

    rows = advise(Scenario(load_model("70b"), Recipe.default("qlora")), tokens=100_000_000)
    rows[0].gpu.id, rows[0].gpus, rows[0].labels

Known Limitations: speed is the roofline model of ``speed.py`` (stated efficiencies, not yet calibrated);
prices move; multi-GPU options assume the cards sit in one machine.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace

from .errors import ScenarioError
from .plan import plan_scenario
from .solve import max_fit, min_gpus
from .spec import GpuSpec, Scenario

HEADROOM_FRACTION = 0.10
GPU_COUNTS = (1, 2, 4, 8)  # machines come with 1, 2, 4 or 8 cards
DEFAULT_TOKENS = 100_000_000

_TOKENS_RE = re.compile(r"^\s*(\d+(?:\.\d+)?(?:e\d+)?)\s*([kmbt]?)\s*$", re.IGNORECASE)
_TOKEN_UNITS = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "t": 10**12}


def parse_tokens(text) -> int:
    """"100M", "1.5B", "2e8", "500000" -> a token count (decimal units: M = 10^6, B = 10^9)."""
    m = _TOKENS_RE.match(str(text))
    if not m:
        raise ScenarioError(f"--tokens {text!r}: use a count such as 100M, 1.5B or 2e8")
    value = int(round(float(m.group(1)) * _TOKEN_UNITS[m.group(2).lower()]))
    if not 1 <= value <= 10**15:
        raise ScenarioError(f"--tokens {text!r}: use from 1 to 10^15 training tokens, e.g. --tokens 100M")
    return value


@dataclass(frozen=True)
class Option:
    """One card (times a count) for one method: memory, solvers' answers, speed and cost.

    Example usage::

        opt = advise(scenario)[0]
        opt.gpu.id, opt.gpus, opt.fits, opt.tokens_per_second, opt.rent_cost_usd, opt.labels

    Known Limitations: ``fits`` is False when the job does not fit even on the largest count.
    """

    gpu: GpuSpec
    method: str
    gpus: int
    shard: str
    fits: bool
    peak_bytes: int
    headroom_bytes: int
    max_batch: int
    max_seq: int
    tokens_per_second: float | None
    bound: str | None
    tokens: int
    labels: tuple = field(default=())
    reasons: tuple = field(default=())
    bf16: bool = True  # False: the card has no bf16 (T4, V100) and the recipe computes in bf16

    @property
    def headroom_fraction(self) -> float:
        return self.headroom_bytes / self.gpu.memory_bytes

    @property
    def roomy(self) -> bool:
        """Fits with at least HEADROOM_FRACTION of the card's memory to spare (and runs the recipe's dtype)."""
        return self.fits and self.bf16 and self.headroom_fraction >= HEADROOM_FRACTION

    @property
    def purchase_usd(self) -> float | None:
        return None if self.gpu.price_usd is None else self.gpus * self.gpu.price_usd

    @property
    def rent_usd_per_hour(self) -> float | None:
        return None if self.gpu.rent_usd_per_hour is None else self.gpus * self.gpu.rent_usd_per_hour

    @property
    def hours(self) -> float | None:
        """Hours to train on ``tokens`` tokens."""
        if not self.fits or not self.tokens_per_second:
            return None
        return self.tokens / self.tokens_per_second / 3600

    @property
    def rent_cost_usd(self) -> float | None:
        """Rental cost of training on ``tokens`` tokens."""
        if self.hours is None or self.rent_usd_per_hour is None:
            return None
        return self.hours * self.rent_usd_per_hour

    @property
    def usd_per_million_tokens(self) -> float | None:
        """Rental cost per million training tokens: the inverse of speed per dollar."""
        if not self.fits or not self.tokens_per_second or self.rent_usd_per_hour is None:
            return None
        return self.rent_usd_per_hour / (self.tokens_per_second * 3600) * 1e6

    def to_dict(self) -> dict:
        """Everything, JSON-ready (integer bytes, USD, hours)."""
        g = self.gpu
        return {
            "gpu": g.id, "gpu_name": g.name, "memory_bytes": g.memory_bytes, "method": self.method,
            "gpus": self.gpus, "shard": self.shard, "fits": self.fits, "peak_bytes": int(self.peak_bytes),
            "headroom_bytes": int(self.headroom_bytes), "headroom_fraction": round(self.headroom_fraction, 4),
            "max_batch": self.max_batch, "max_seq": self.max_seq,
            "tokens_per_second": None if self.tokens_per_second is None else round(self.tokens_per_second, 1),
            "bound": self.bound, "tokens": self.tokens,
            "hours": None if self.hours is None else round(self.hours, 3),
            "price_usd": g.price_usd, "purchase_usd": self.purchase_usd,
            "rent_usd_per_hour": self.rent_usd_per_hour,
            "rent_cost_usd": None if self.rent_cost_usd is None else round(self.rent_cost_usd, 2),
            "usd_per_million_tokens": (None if self.usd_per_million_tokens is None
                                       else round(self.usd_per_million_tokens, 4)),
            "bf16_ok": self.bf16, "labels": list(self.labels), "reasons": list(self.reasons),
            "price_basis": _price_basis(g),
        }


def _price_basis(gpu: GpuSpec) -> str | None:
    """The catalogue's note on where a card's prices come from and when (None for cards not in it)."""
    from .gpus import _raw_catalog

    return next((e.get("price_basis") for e in _raw_catalog()["gpus"] if e["id"] == gpu.id), None)


def _no_bf16(gpu: GpuSpec) -> bool:
    """True for catalogue cards without bf16 tensor cores (the catalogue's ``bf16_supported: false``)."""
    from .gpus import _raw_catalog

    return any(e["id"] == gpu.id and e.get("bf16_supported") is False for e in _raw_catalog()["gpus"])


def _option(scenario: Scenario, gpu: GpuSpec, tokens: int, max_gpus: int) -> Option:
    from .speed import estimate_speed

    bf16 = not (scenario.recipe.dtype == "bf16" and _no_bf16(gpu))
    s = replace(scenario, gpu=gpu)
    cap = gpu.memory_bytes
    n = 1
    offload = s.workload.offload  # FSDP CPU offload: FSDP on every count, one card included
    b = plan_scenario(s.with_(gpus=1, shard="fsdp" if offload else "none"))
    if b.peak_bytes > cap:
        need = min_gpus(s, "fsdp", limit=max_gpus)
        if need is None:
            return Option(gpu, s.recipe.method, max_gpus, "fsdp", False, 0, 0, 0, 0, None, None, tokens, bf16=bf16)
        n = next(c for c in GPU_COUNTS if c >= need)
    shard = "fsdp" if n > 1 or offload else "none"
    s = s.with_(gpus=n, shard=shard)
    b = plan_scenario(s) if n > 1 else b
    tps = bound = None
    if gpu.bf16_tflops and gpu.bandwidth_gbps:
        est = estimate_speed(s)
        tps, bound = est.tokens_per_second, est.bound
    return Option(gpu, s.recipe.method, n, shard, True, int(b.peak_bytes), int(cap - b.peak_bytes),
                  max_fit(s, "batch"), max_fit(s, "seq"), tps, bound, tokens, bf16=bf16)


def _sort_key(o: Option):
    if not o.fits:
        return (3, 0.0, 0.0, o.gpu.memory_bytes)
    tier = 0 if o.roomy else 2
    per_m = o.usd_per_million_tokens
    if per_m is not None:
        return (tier, 0, per_m, o.gpu.memory_bytes)
    return (tier, 1, o.purchase_usd if o.purchase_usd is not None else math.inf, o.gpu.memory_bytes)


def _label(options: list[Option]) -> list[Option]:
    """Attach the buy / rent / fastest labels and their one-line reasons."""
    roomy = [o for o in options if o.roomy]
    picks: dict[int, list[tuple[str, str]]] = {}
    pct = f"{HEADROOM_FRACTION:.0%}"

    def pick(candidates, key, label, why):
        if candidates:
            best = min(candidates, key=key)
            picks.setdefault(id(best), []).append((label, why(best)))

    pick([o for o in roomy if o.purchase_usd is not None], lambda o: (o.purchase_usd, -(o.tokens_per_second or 0)),
         "buy", lambda o: (f"cheapest to buy that fits with >= {pct} headroom: ${o.purchase_usd:,.0f}"
                           + (f", {o.hours:,.0f} h for {_tokens_label(o.tokens)} tokens" if o.hours else "")))
    pick([o for o in roomy if o.usd_per_million_tokens is not None], lambda o: o.usd_per_million_tokens,
         "rent", lambda o: (f"fastest per dollar (>= {pct} headroom): ${o.usd_per_million_tokens:.2f} per million "
                            f"tokens, ${o.rent_cost_usd:,.0f} for {_tokens_label(o.tokens)} tokens"))
    pick([o for o in roomy if o.tokens_per_second], lambda o: -o.tokens_per_second,
         "fastest", lambda o: f"most tokens/s (>= {pct} headroom): {o.tokens_per_second:,.0f} tokens/s, "
                              f"{o.hours:,.1f} h for {_tokens_label(o.tokens)} tokens")
    out = []
    for o in options:
        got = picks.get(id(o), [])
        out.append(replace(o, labels=tuple(lbl for lbl, _ in got), reasons=tuple(w for _, w in got)))
    return out


def _tokens_label(tokens: int) -> str:
    for unit, div in (("T", 10**12), ("B", 10**9), ("M", 10**6), ("k", 10**3)):
        if tokens >= div:
            return f"{tokens / div:g}{unit}"
    return str(tokens)


def advise(scenarios, gpus=None, *, tokens: int = DEFAULT_TOKENS, budget_usd: float | None = None,
           max_gpus: int = 8) -> list[Option]:
    """Options for every scenario (one per method) on every card, labelled and sorted by the recommendation.

    ``gpus`` replaces the catalogue; ``budget_usd`` keeps the options whose cards cost at most that to buy
    (cards without a purchase price are dropped); ``max_gpus`` is the largest FSDP count tried (1, 2, 4, 8).
    """
    if isinstance(scenarios, Scenario):
        scenarios = [scenarios]
    if gpus is None:
        from .gpus import catalog

        gpus = catalog()
    if budget_usd is not None and not budget_usd > 0:
        raise ScenarioError(f"--budget {budget_usd}: use a positive purchase budget in USD, e.g. --budget 2000")
    if max_gpus not in GPU_COUNTS:
        raise ScenarioError(f"max_gpus {max_gpus}: use one of {', '.join(map(str, GPU_COUNTS))}")
    tokens = int(tokens)
    if tokens < 1:
        raise ScenarioError(f"--tokens {tokens}: use a positive number of training tokens, e.g. --tokens 100M")
    options = []
    for s in scenarios:
        for g in gpus:
            o = _option(s, g, tokens, max_gpus)
            if budget_usd is not None and (o.purchase_usd is None or o.purchase_usd > budget_usd):
                continue
            options.append(o)
    options.sort(key=_sort_key)
    return _label(options)
