"""The scenario: frozen dataclasses that every layer (plan, trace, profile, sweep, report) takes as input.

A ``Scenario`` is a model shape, a training recipe, a workload and optionally a GPU. Nothing here imports
torch; the tracer and profiler build exactly the recipe described here (see ``profilers/recipe.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from math import prod

from .errors import ScenarioError

# Bytes per element of the dtypes a recipe can name.
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
# config.json spellings ("torch_dtype" / "dtype") to the short names used everywhere here.
CONFIG_DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}

METHODS = ("lora", "qlora", "full")
QUANT_TYPES = ("nf4", "fp4")
ATTN_IMPLS = ("sdpa", "eager", "flash")
SHARDING = ("none", "ddp", "fsdp")
# Block sizes bitsandbytes' 4-bit quantizer accepts (functional.quantize_4bit).
BLOCKSIZES = (64, 128, 256, 512, 1024, 2048, 4096)

# name -> (implementation, bits of state, paged). "adamw" is the Hugging Face Trainer default
# (optim="adamw_torch_fused" on torch >= 2.8, transformers training_args.py).
OPTIMIZERS = {
    "adamw": ("torch_fused", 32, False),
    "adamw_torch": ("torch_foreach", 32, False),
    "adamw_8bit": ("bnb", 8, False),
    "paged_adamw_8bit": ("bnb", 8, True),
    "adamw_32bit": ("bnb", 32, False),
    "paged_adamw_32bit": ("bnb", 32, True),
    "sgd": ("torch_sgd", 0, False),
}


@dataclass(frozen=True)
class ParamGroup:
    """One kind of parameter tensor in the model, repeated ``count`` times (once per decoder layer, or once).

    ``shape`` is the weight shape as torch stores it (``nn.Linear``: ``(out_features, in_features)``; fused MoE
    experts: ``(experts, out, in)``). ``quantized`` says whether 4-bit loading replaces the module with
    bitsandbytes ``Linear4bit``; ``lora_target`` is the module name peft matches (``"q_proj"``), or None.
    ``lora_rank_mult`` is 2 where peft fuses two adapters into one (Mixtral's ``gate_up_proj`` experts).
    """

    name: str
    kind: str  # "linear" | "experts" | "router" | "embedding" | "lm_head" | "norm"
    shape: tuple[int, ...]
    count: int = 1
    bias: int = 0
    quantized: bool = False
    lora_target: str | None = None
    lora_rank_mult: int = 1
    tied: bool = False  # shares storage with another group (tied lm_head): no bytes of its own

    @property
    def numel(self) -> int:
        """Elements of one weight tensor (bias excluded)."""
        return prod(self.shape)

    @property
    def lora_in_out(self) -> tuple[int, int, int]:
        """(experts, in_features, out_features) as peft's LoRA layer sees this weight."""
        if len(self.shape) == 3:  # fused experts (E, out, in); peft swaps to in/out for non-transposed
            e, out_f, in_f = self.shape
            return e, in_f, out_f
        out_f, in_f = self.shape
        return 1, in_f, out_f


@dataclass(frozen=True)
class ModelShape:
    """Everything the memory model needs to know about an architecture, read from its config.json.

    Example usage::

        shape = vramplan.models.load_model("8b")
        shape.params            # 8,030,261,248 for Llama-3.1-8B

    Known Limitations: only decoder-only causal LMs of the families in ``models.FAMILIES``.
    """

    name: str
    model_type: str
    architecture: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    tie_word_embeddings: bool
    dtype: str  # "bf16" | "fp16" | "fp32": the dtype transformers loads it in (config dtype, dtype="auto")
    hidden_act: str
    groups: tuple[ParamGroup, ...]
    norms_per_layer: int = 2
    qk_norm: bool = False
    fused_qkv: bool = False
    fused_gate_up: bool = False
    num_experts: int = 0
    experts_per_token: int = 0
    attn_softcap: float | None = None
    final_softcap: float | None = None
    sliding_window: int | None = None
    sdpa_supported: bool = True
    scaled_embedding: bool = False  # Gemma 2 multiplies embeddings by a stored sqrt(hidden) scalar
    source: str = ""

    @property
    def params(self) -> int:
        """Total parameters, tied weights counted once."""
        return sum((g.numel + g.bias) * g.count for g in self.groups if not g.tied)

    @property
    def q_dim(self) -> int:
        """Width of the query projection: heads x head_dim (not always hidden_size, e.g. Gemma 2)."""
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        """Width of the key / value projections: kv heads x head_dim."""
        return self.num_kv_heads * self.head_dim

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    def lora_targets(self) -> tuple[str, ...]:
        """The module names ``target_modules="all-linear"`` selects (peft: every linear but the output head)."""
        seen: list[str] = []
        for g in self.groups:
            if g.lora_target and g.lora_target not in seen:
                seen.append(g.lora_target)
        return tuple(seen)

    def to_dict(self) -> dict:
        """JSON-ready summary (the "model" object of the plan JSON)."""
        return {
            "name": self.name,
            "model_type": self.model_type,
            "architecture": self.architecture,
            "params": self.params,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "num_kv_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "vocab_size": self.vocab_size,
            "tie_word_embeddings": self.tie_word_embeddings,
            "dtype": self.dtype,
            "num_experts": self.num_experts,
            "source": self.source,
        }


@dataclass(frozen=True)
class Recipe:
    """How the model is trained. Defaults are the usual Hugging Face / TRL QLoRA tutorial recipe.

    ``autocast`` is the Trainer's ``bf16=True`` / ``fp16=True`` mixed precision (torch autocast around
    forward and loss). ``kbit_prep`` is peft's ``prepare_model_for_kbit_training`` (4-bit recipes only):
    it upcasts every non-quantized parameter to fp32 and turns on gradient checkpointing's input grads.
    """

    method: str = "qlora"
    dtype: str = "bf16"
    quant: str = "nf4"
    double_quant: bool = True
    blocksize: int = 64
    kbit_prep: bool = True
    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    targets: tuple[str, ...] = ("all-linear",)
    adapter_dtype: str = "fp32"
    optimizer: str = "paged_adamw_32bit"
    grad_ckpt: bool = True
    attn: str = "sdpa"
    autocast: bool = True

    @classmethod
    def default(cls, method: str) -> "Recipe":
        """The tutorial recipe for a method: AdamW (fused) for LoRA and full, paged AdamW 32-bit for QLoRA."""
        if method not in METHODS:
            raise ScenarioError(f"unknown method {method!r}; use one of: {', '.join(METHODS)}, or both")
        if method == "qlora":
            return cls()
        return cls(method=method, optimizer="adamw", kbit_prep=False)

    @property
    def quantized(self) -> bool:
        return self.method == "qlora"

    @property
    def upcast(self) -> bool:
        """True when prepare_model_for_kbit_training's fp32 upcast applies (4-bit base and kbit_prep)."""
        return self.quantized and self.kbit_prep

    @property
    def trains_adapters(self) -> bool:
        return self.method in ("lora", "qlora")

    def validate(self) -> None:
        """Raise ScenarioError naming the first knob that is out of range."""
        problems = []
        if self.method not in METHODS:
            problems.append(f"--method {self.method!r}: use lora, qlora, full or both")
        if self.dtype not in ("bf16", "fp16"):
            problems.append(f"--dtype {self.dtype!r}: use bf16 or fp16")
        if self.quant not in QUANT_TYPES:
            problems.append(f"--quant {self.quant!r}: use nf4 or fp4")
        if self.blocksize not in BLOCKSIZES:
            problems.append(f"--blocksize {self.blocksize}: bitsandbytes accepts {', '.join(map(str, BLOCKSIZES))}")
        if not 1 <= self.rank <= 4096:
            problems.append(f"--rank {self.rank}: use a rank from 1 to 4096, e.g. --rank 16")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"--dropout {self.dropout}: use a probability in [0, 1), e.g. --dropout 0.05")
        if not (self.alpha > 0):
            problems.append(f"--alpha {self.alpha}: use a positive number, e.g. --alpha 32")
        if self.adapter_dtype not in DTYPE_BYTES:
            problems.append(f"--adapter-dtype {self.adapter_dtype!r}: use fp32, bf16 or fp16")
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"--optimizer {self.optimizer!r}: use one of {', '.join(OPTIMIZERS)}")
        if self.attn not in ATTN_IMPLS:
            problems.append(f"--attn {self.attn!r}: use sdpa, eager or flash")
        if problems:
            raise ScenarioError("; ".join(problems))


@dataclass(frozen=True)
class Workload:
    """Tokens per step and how the job is spread over GPUs."""

    seq: int = 2048
    batch: int = 1
    gpus: int = 1
    shard: str = "none"
    # FSDP CPUOffload(offload_params=True): parameter shards, their gradients and the optimizer (state and
    # step) live in CPU memory; only the gathered units come to the GPU.
    offload: bool = False

    @property
    def tokens(self) -> int:
        """Tokens per micro-batch per GPU (B x S)."""
        return self.seq * self.batch

    def validate(self) -> None:
        """Raise ScenarioError for sizes no training run could have."""
        if not 1 <= self.seq <= 4_194_304:
            raise ScenarioError(f"--seq {self.seq}: use a sequence length from 1 to 4194304, e.g. --seq 2048")
        if not 1 <= self.batch <= 65_536:
            raise ScenarioError(f"--batch {self.batch}: use a micro-batch from 1 to 65536, e.g. --batch 4")
        if not 1 <= self.gpus <= 4096:
            raise ScenarioError(f"--gpus {self.gpus}: use 1 to 4096 GPUs")
        if self.shard not in SHARDING:
            raise ScenarioError(f"--shard {self.shard!r}: use none, ddp or fsdp")
        if self.gpus > 1 and self.shard == "none":
            raise ScenarioError(f"--gpus {self.gpus} needs a way to use them: add --shard ddp or --shard fsdp")
        if self.offload and self.shard != "fsdp":
            raise ScenarioError("--offload is FSDP's CPU offload: add --shard fsdp (it works on one GPU too)")


@dataclass(frozen=True)
class GpuSpec:
    """One GPU model: memory as NVML reports it (bytes), speed, price. A bare size has only memory."""

    id: str
    name: str
    memory_bytes: int
    compute_capability: str | None = None
    bf16_tflops: float | None = None
    bandwidth_gbps: float | None = None
    price_usd: float | None = None
    rent_usd_per_hour: float | None = None
    segment: str | None = None
    aliases: tuple[str, ...] = field(default=())

    @property
    def is_hopper_or_newer(self) -> bool:
        """sm90+ gets 32 MiB cuBLAS workspaces (pytorch PR #89027) instead of 8 MiB."""
        major = (self.compute_capability or "").split(".")[0]
        if not major.isdigit():  # no figure, or an AMD gfx target (MI300X: "gfx942")
            return False
        return int(major) >= 9

    def to_dict(self) -> dict:
        return {"name": self.name, "id": self.id, "memory_bytes": self.memory_bytes,
                "compute_capability": self.compute_capability}


@dataclass(frozen=True)
class Scenario:
    """The single input of every layer: model x recipe x workload (x GPU)."""

    model: ModelShape
    recipe: Recipe = field(default_factory=Recipe)
    workload: Workload = field(default_factory=Workload)
    gpu: GpuSpec | None = None

    def with_(self, **changes) -> "Scenario":
        """A copy with recipe / workload fields changed by name: ``s.with_(seq=4096, rank=64)``."""
        rec = {k: v for k, v in changes.items() if k in Recipe.__dataclass_fields__}
        wl = {k: v for k, v in changes.items() if k in Workload.__dataclass_fields__}
        other = set(changes) - set(rec) - set(wl)
        if other:
            raise TypeError(f"unknown scenario fields: {sorted(other)}")
        return replace(self, recipe=replace(self.recipe, **rec), workload=replace(self.workload, **wl))
