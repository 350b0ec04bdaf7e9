"""Model shapes: the shipped catalogue of real config.json files, shorthands, local configs, and the
per-family parameter inventory derived from a config without importing torch.

The inventory (``ModelShape.groups``) lists every parameter tensor the transformers class creates, which of
them 4-bit loading quantizes, and which ones peft's ``target_modules="all-linear"`` wraps. The test suite
checks it, tensor by tensor, against the real transformers + peft + bitsandbytes objects built on the meta
device for every catalogue model (tests/test_models_inventory.py).
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from importlib import resources
from pathlib import Path

from .errors import ConfigError, UnknownModelError
from .spec import CONFIG_DTYPES, ModelShape, ParamGroup

# Shorthands a person types, and the catalogue model each one means (README lists them).
SHORTHANDS = {
    "0.5b": "qwen2.5-0.5b",
    "1b": "llama-3.2-1b",
    "1.1b": "tinyllama-1.1b",
    "1.5b": "qwen2.5-1.5b",
    "2b": "gemma-2-2b",
    "3b": "llama-3.2-3b",
    "3.8b": "phi-3-mini-4k",
    "7b": "llama-2-7b",
    "8b": "llama-3.1-8b",
    "9b": "gemma-2-9b",
    "13b": "llama-2-13b",
    "14b": "qwen2.5-14b",
    "27b": "gemma-2-27b",
    "32b": "qwen2.5-32b",
    "47b": "mixtral-8x7b",
    "70b": "llama-3.1-70b",
    "72b": "qwen2.5-72b",
}

# Families whose inventory is derived here. Anything else: `vramplan trace` still works on it.
FAMILIES = ("llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma2", "phi3")

_MAX_CONFIG_BYTES = 4 * 1024 * 1024
_LIMITS = {  # a config outside these is broken or hostile, not a model
    "hidden_size": 1_000_000,
    "intermediate_size": 10_000_000,
    "num_hidden_layers": 10_000,
    "num_attention_heads": 100_000,
    "num_key_value_heads": 100_000,
    "head_dim": 100_000,
    "vocab_size": 100_000_000,
    "num_local_experts": 100_000,
    "num_experts_per_tok": 100_000,
    "sliding_window": 1 << 40,
}


def _catalog_dir():
    return resources.files("vramplan").joinpath("catalog", "models")


@lru_cache(maxsize=1)
def catalog_index() -> dict[str, dict]:
    """The shipped catalogue: file stem -> {"repo", "params_b", "family"}."""
    return json.loads(_catalog_dir().joinpath("index.json").read_text(encoding="utf-8"))


def catalog_names() -> list[str]:
    """Catalogue model names, sorted."""
    return sorted(catalog_index())


def resolve_name(name: str) -> str | None:
    """Map a shorthand, catalogue name or catalogue repo id to a catalogue name; None if it is none of them."""
    key = name.strip().lower()
    if key in SHORTHANDS:
        return SHORTHANDS[key]
    index = catalog_index()
    if key in index:
        return key
    for stem, entry in index.items():
        if entry.get("repo", "").lower() == key or entry.get("repo", "").lower().split("/")[-1] == key:
            return stem
    return None


def load_model(name: str, *, online: bool = False) -> ModelShape:
    """Resolve what a user typed (shorthand, catalogue name, Hub id, config.json path or model folder)."""
    stem = resolve_name(name)
    if stem is not None:
        return _load_catalog(stem)
    path = Path(os.path.expanduser(name))
    if path.is_dir():
        cfg_path = path / "config.json"
        if not cfg_path.is_file():
            raise UnknownModelError(f"folder {name!r} has no config.json; pass the config.json of the model to plan")
        return shape_from_config(read_config(cfg_path), name=str(path), source=str(cfg_path))
    if path.is_file():
        return shape_from_config(read_config(path), name=str(path), source=str(path))
    if name.count("/") == 1 and not name.startswith((".", "/", "~")) and not name.endswith(".json"):
        if not online:
            raise UnknownModelError(
                f"{name!r} is not in the catalogue and nothing is fetched by default; add --online to read its "
                f"config.json from the Hugging Face Hub, or pass a local config.json (see `vramplan models`)"
            )
        return _load_from_hub(name)
    raise UnknownModelError(
        f"unknown model {name!r}: use a shorthand ({', '.join(SHORTHANDS)}), a catalogue name "
        f"(`vramplan models` lists them), or a path to a config.json"
    )


def load_config(name: str, *, online: bool = False, layers: int | None = None) -> dict:
    """The config.json dict behind what a user typed (as ``load_model`` resolves it), for code that builds the
    real model (trace, profile). ``layers`` keeps only the first N decoder layers (small variants for tests).
    """
    shape = load_model(name, online=online)  # resolves and validates, with the same errors
    stem = resolve_name(name)
    if stem is not None:
        cfg = json.loads(_catalog_dir().joinpath(f"{stem}.json").read_text(encoding="utf-8"))
    elif Path(os.path.expanduser(name)).exists():
        path = Path(os.path.expanduser(name))
        cfg = read_config(path / "config.json" if path.is_dir() else path)
    else:
        from huggingface_hub import hf_hub_download

        cfg = read_config(Path(hf_hub_download(name, "config.json")))
    cfg = {k: v for k, v in cfg.items() if k != "_vramplan"}
    if layers is not None:
        cfg = with_layers(cfg, layers)
    shape_from_config(cfg, name=shape.name, source=shape.source)  # the variant must still be readable
    return cfg


def with_layers(cfg: dict, layers: int) -> dict:
    """A copy of a config with only the first ``layers`` decoder layers (per-layer lists trimmed to match)."""
    if not isinstance(layers, int) or layers < 1:
        raise ConfigError(f"--layers must be a positive whole number, not {layers!r}")
    text = dict(cfg.get("text_config") or {}) if "num_hidden_layers" not in cfg and "text_config" in cfg else None
    target = text if text is not None else dict(cfg)
    total = target.get("num_hidden_layers")
    if not isinstance(total, int):
        raise ConfigError("config.json has no num_hidden_layers; cannot make a smaller variant")
    if layers > total:
        raise ConfigError(f"--layers {layers} is more than the model's {total} layers; use at most {total}")
    target["num_hidden_layers"] = layers
    for key in ("layer_types", "mlp_only_layers"):
        if isinstance(target.get(key), list) and len(target[key]) == total:
            target[key] = target[key][:layers]
    if isinstance(target.get("max_window_layers"), int):
        target["max_window_layers"] = min(target["max_window_layers"], layers)
    if text is not None:
        return dict(cfg, text_config=target)
    return target


@lru_cache(maxsize=64)
def _load_catalog(stem: str) -> ModelShape:
    text = _catalog_dir().joinpath(f"{stem}.json").read_text(encoding="utf-8")
    cfg = json.loads(text)
    repo = cfg.get("_vramplan", {}).get("repo", stem)
    return shape_from_config(cfg, name=stem, source=repo)


def read_config(path: Path) -> dict:
    """Read a config.json with limits: a broken or hostile file raises ConfigError with the reason."""
    try:
        size = path.stat().st_size
        if size > _MAX_CONFIG_BYTES:
            raise ConfigError(f"{path} is {size} bytes, too large for a config.json; pass the model's config.json")
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text; pass the model's config.json") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}; check the path") from None
    try:
        cfg = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); fix the file or "
            f"download the model's config.json again"
        ) from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path} holds a JSON {type(cfg).__name__}, not an object; pass the model's config.json")
    return cfg


def _load_from_hub(repo_id: str) -> ModelShape:
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise UnknownModelError(
            "reading a Hub id needs huggingface_hub: pip install 'vramplan[profile]', or pass a local config.json"
        ) from None
    try:
        local = hf_hub_download(repo_id, "config.json")
    except Exception as exc:  # network, gated repo, missing file: all user-facing
        raise UnknownModelError(
            f"could not fetch config.json of {repo_id!r} from the Hub ({type(exc).__name__}); download it and "
            f"pass the path instead"
        ) from None
    return shape_from_config(read_config(Path(local)), name=repo_id, source=repo_id)


# --------------------------------------------------------------------------------------------------
# config.json -> inventory


def _int(cfg: dict, key: str, default: int | None = None, *, where: str) -> int:
    value = cfg.get(key, default)
    if value is None:
        raise ConfigError(f"{where}: config.json has no {key!r}; this is not a decoder config vramplan can read")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: {key!r} must be an integer, got {value!r}; fix the config.json")
    limit = _LIMITS.get(key, 1 << 40)
    if not 1 <= value <= limit:
        raise ConfigError(f"{where}: {key}={value} is out of range (1..{limit}); fix the config.json")
    return value


def _float_or_none(cfg: dict, key: str, *, where: str) -> float | None:
    value = cfg.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: {key!r} must be a number or null, got {value!r}; fix the config.json")
    return float(value)


def shape_from_config(cfg: dict, *, name: str, source: str = "") -> ModelShape:
    """Derive the exact parameter inventory transformers 5.23 builds for this config (no torch)."""
    where = name
    model_type = cfg.get("model_type")
    if not isinstance(model_type, str):
        raise ConfigError(f"{where}: config.json has no model_type; pass a Hugging Face causal-LM config.json")
    if model_type not in FAMILIES:
        raise ConfigError(
            f"{where}: model_type {model_type!r} is not modelled by the planner (supported: {', '.join(FAMILIES)}); "
            f"`vramplan trace` measures any transformers architecture"
        )
    h = _int(cfg, "hidden_size", where=where)
    inter = _int(cfg, "intermediate_size", where=where)
    n_layers = _int(cfg, "num_hidden_layers", where=where)
    n_heads = _int(cfg, "num_attention_heads", where=where)
    n_kv = _int(cfg, "num_key_value_heads", n_heads, where=where)
    vocab = _int(cfg, "vocab_size", where=where)
    head_dim = cfg.get("head_dim")
    if head_dim is None:
        if h % n_heads:
            raise ConfigError(f"{where}: hidden_size {h} is not divisible by num_attention_heads {n_heads}")
        head_dim = h // n_heads
    else:
        head_dim = _int(cfg, "head_dim", where=where)
    if n_heads % n_kv:
        raise ConfigError(
            f"{where}: num_attention_heads {n_heads} is not a multiple of num_key_value_heads {n_kv}; fix the config"
        )
    tie_default = model_type == "gemma2"
    tied = bool(cfg.get("tie_word_embeddings", tie_default))
    raw_dtype = cfg.get("dtype", cfg.get("torch_dtype")) or "float32"
    if raw_dtype not in CONFIG_DTYPES:
        raise ConfigError(f"{where}: dtype {raw_dtype!r} is not one of {', '.join(CONFIG_DTYPES)}; fix the config")
    dtype = CONFIG_DTYPES[raw_dtype]
    act = cfg.get("hidden_act", cfg.get("hidden_activation", "silu"))
    if not isinstance(act, str):
        raise ConfigError(f"{where}: hidden_act must be a string, got {act!r}")

    qd, kvd = n_heads * head_dim, n_kv * head_dim
    L = n_layers
    # Bias rules as each transformers 5.23 class hard-codes them: only llama reads mlp_bias; llama, qwen3 and
    # gemma2 read attention_bias; qwen2 always biases q/k/v (never o); mistral, mixtral and phi3 never bias.
    reads_attention_bias = model_type in ("llama", "qwen3", "gemma2")
    attn_bias = model_type == "qwen2" or (reads_attention_bias and bool(cfg.get("attention_bias", False)))
    mlp_bias = model_type == "llama" and bool(cfg.get("mlp_bias", False))
    groups: list[ParamGroup] = [ParamGroup("model.embed_tokens", "embedding", (vocab, h))]

    def lin(path: str, target: str, out_f: int, in_f: int, bias: bool) -> ParamGroup:
        return ParamGroup(f"model.layers.*.{path}", "linear", (out_f, in_f), L, out_f if bias else 0,
                          quantized=True, lora_target=target)

    fused_qkv = fused_gate_up = False
    if model_type == "phi3":
        fused_qkv = fused_gate_up = True
        groups += [
            lin("self_attn.qkv_proj", "qkv_proj", qd + 2 * kvd, h, attn_bias),
            lin("self_attn.o_proj", "o_proj", h, qd, attn_bias),
        ]
    else:
        o_bias = attn_bias and model_type != "qwen2"  # Qwen2's o_proj has no bias even though q/k/v do
        groups += [
            lin("self_attn.q_proj", "q_proj", qd, h, attn_bias),
            lin("self_attn.k_proj", "k_proj", kvd, h, attn_bias),
            lin("self_attn.v_proj", "v_proj", kvd, h, attn_bias),
            lin("self_attn.o_proj", "o_proj", h, qd, o_bias),
        ]
    n_experts = top_k = 0
    if model_type == "mixtral":
        n_experts = _int(cfg, "num_local_experts", where=where)
        top_k = _int(cfg, "num_experts_per_tok", where=where)
        # transformers 5 stores experts as fused 3-D parameters, not nn.Linear: 4-bit loading leaves them in
        # the model dtype. peft wraps them as target parameters; gate_up's adapter has rank 2r (w1 and w3 fused).
        groups += [
            ParamGroup("model.layers.*.mlp.gate", "router", (n_experts, h), L, lora_target="gate"),
            ParamGroup("model.layers.*.mlp.experts.gate_up_proj", "experts", (n_experts, 2 * inter, h), L,
                       lora_target="experts", lora_rank_mult=2),
            ParamGroup("model.layers.*.mlp.experts.down_proj", "experts", (n_experts, h, inter), L,
                       lora_target="experts"),
        ]
    elif model_type == "phi3":
        groups += [
            lin("mlp.gate_up_proj", "gate_up_proj", 2 * inter, h, mlp_bias),
            lin("mlp.down_proj", "down_proj", h, inter, mlp_bias),
        ]
    else:
        groups += [
            lin("mlp.gate_proj", "gate_proj", inter, h, mlp_bias),
            lin("mlp.up_proj", "up_proj", inter, h, mlp_bias),
            lin("mlp.down_proj", "down_proj", h, inter, mlp_bias),
        ]
    norms = 4 if model_type == "gemma2" else 2
    groups.append(ParamGroup("model.layers.*.<norms>", "norm", (h,), L * norms))
    qk_norm = model_type == "qwen3"
    if qk_norm:
        groups.append(ParamGroup("model.layers.*.self_attn.<q_norm,k_norm>", "norm", (head_dim,), L * 2))
    groups.append(ParamGroup("model.norm", "norm", (h,)))
    groups.append(ParamGroup("lm_head", "lm_head", (vocab, h), tied=tied))

    sliding = cfg.get("sliding_window") if cfg.get("use_sliding_window", True) else None
    if sliding is not None:
        sliding = _int(cfg, "sliding_window", where=where)
    arch = cfg.get("architectures") or [""]
    return ModelShape(
        name=name,
        model_type=model_type,
        architecture=arch[0] if isinstance(arch, list) and arch and isinstance(arch[0], str) else "",
        hidden_size=h,
        intermediate_size=inter,
        num_layers=n_layers,
        num_heads=n_heads,
        num_kv_heads=n_kv,
        head_dim=head_dim,
        vocab_size=vocab,
        tie_word_embeddings=tied,
        dtype=dtype,
        hidden_act=act,
        groups=tuple(groups),
        norms_per_layer=norms,
        qk_norm=qk_norm,
        fused_qkv=fused_qkv,
        fused_gate_up=fused_gate_up,
        num_experts=n_experts,
        experts_per_token=top_k,
        attn_softcap=_float_or_none(cfg, "attn_logit_softcapping", where=where),
        final_softcap=_float_or_none(cfg, "final_logit_softcapping", where=where),
        sliding_window=sliding,
        sdpa_supported=model_type != "gemma2",  # Gemma2PreTrainedModel._supports_sdpa = False (softcapping)
        scaled_embedding=model_type == "gemma2",
        source=source,
    )
