"""Scenario files: one question as commented YAML, read and validated in one pass with line numbers.

A file names a question, models, GPUs and knobs. Knobs have the names of the CLI knobs (``seq``, ``rank``,
``double_quant``, ...). A list makes a grid axis; the grid is the cartesian product of the axes, except axes
named together under ``zip:``, which advance together. Example::

    question: How does a 7B QLoRA step grow with context?
    model: 7b                                   # shorthand, catalogue name, or a config.json path
    gpu: [rtx4090, a100-80gb]                   # cards or sizes (24gb); one row per GPU
    method: qlora
    seq: {from: 1024, to: 32768, times: 2}      # 1024, 2048, ..., 32768
    batch: [1, 2, 4]

Every problem in the file (unknown keys, bad values, unknown models or GPUs, knob combinations the libraries
refuse) is collected with its line number and raised as one ``ScenarioFileError``.

Known Limitations: Hub ids are not fetched (a sweep never touches the network); name a catalogue model or a
local config.json instead.
"""

from __future__ import annotations

import difflib
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from .errors import ScenarioError, UnknownModelError, VramplanError
from .spec import ATTN_IMPLS, BLOCKSIZES, OPTIMIZERS, QUANT_TYPES, SHARDING

# Rows a file may ask for: a sweep this big runs in seconds and its DataFrame takes about 1 GB; beyond it a
# typo is more likely than intent.
MAX_ROWS = 2_000_000
MAX_AXIS_VALUES = 100_000
_MAX_FILE_BYTES = 1024 * 1024

_CHOICES = {
    "method": ("lora", "qlora", "full", "both"),
    "dtype": ("bf16", "fp16"),
    "quant": QUANT_TYPES,
    "adapter_dtype": ("fp32", "bf16", "fp16"),
    "optimizer": tuple(OPTIMIZERS),
    "attn": ATTN_IMPLS,
    "shard": SHARDING,
}
# name -> (low, high, example)
_INTS = {
    "seq": (1, 4_194_304, 2048),
    "batch": (1, 65_536, 4),
    "rank": (1, 4096, 16),
    "gpus": (1, 4096, 2),
    "blocksize": (64, 4096, 64),
}
_BOOLS = ("double_quant", "kbit_prep", "grad_ckpt", "autocast")
_FLOATS = ("alpha", "dropout")

# Knobs in the order of the CLI; the order of the keys in a file sets the order of the axes instead.
KNOBS = ("method", "seq", "batch", "rank", "alpha", "dropout", "targets", "adapter_dtype", "dtype", "quant",
         "double_quant", "blocksize", "kbit_prep", "optimizer", "grad_ckpt", "attn", "autocast", "gpus", "shard")
# The defaults of the CLI knobs (cli._knobs); optimizer None = the method's default, kbit_prep only for QLoRA.
DEFAULTS = {
    "method": "both", "seq": 2048, "batch": 1, "rank": 16, "alpha": 32.0, "dropout": 0.05, "targets": "all-linear",
    "adapter_dtype": "fp32", "dtype": "bf16", "quant": "nf4", "double_quant": True, "blocksize": 64,
    "kbit_prep": True, "optimizer": None, "grad_ckpt": True, "attn": "sdpa", "autocast": True, "gpus": 1,
    "shard": "none",
}
AXES = ("model", "gpu") + KNOBS
OTHER_KEYS = ("question", "source", "zip", "columns")
KEYS = AXES + OTHER_KEYS
_ALIASES = {"models": "model"}


class ScenarioFileError(ScenarioError):
    """A scenario file with problems; ``problems`` lists them as "line N: ..." strings."""

    def __init__(self, path, problems: list[str]):
        self.problems = list(problems)
        n = len(self.problems)
        head = f"{path}: {n} problem{'s' if n != 1 else ''}: " if n > 1 else f"{path}: "
        super().__init__(head + "; ".join(self.problems))


@dataclass(frozen=True)
class Axis:
    """One knob of the file: its values (one value = a constant) and the line it is on."""

    name: str
    values: tuple
    line: int
    given: bool = True  # False for knobs the file leaves at their default


@dataclass(frozen=True)
class ScenarioFile:
    """A parsed, validated scenario file: the question, the axes and how they combine.

    Example usage::

        sf = load_scenario_file("scenarios/context-length.yaml")
        sf.rows, [a.name for a in sf.varying]

    ``units`` are the independent grid dimensions, outermost first: each is a tuple of axis names (several
    when zipped) that advance together. ``models`` maps each model value to its ModelShape and ``gpus``
    each GPU value to its GpuSpec (``None`` when the file names no GPU).
    Known Limitations: see the module docstring.
    """

    path: str
    question: str
    source: str
    axes: dict  # name -> Axis, every knob (given or default), model and gpu
    units: tuple  # tuple[tuple[str, ...], ...]
    models: dict
    gpus: dict
    columns: tuple | None = None
    auto_dropout: bool = field(default=False)  # dropout left at its default: 0 for MoE experts, as the CLI does

    @property
    def rows(self) -> int:
        """Number of rows the grid has."""
        n = 1
        for unit in self.units:
            n *= len(self.axes[unit[0]].values)
        return n

    @property
    def varying(self) -> list:
        """Axes with more than one value, in file order."""
        return [self.axes[name] for unit in self.units for name in unit if len(self.axes[name].values) > 1]


# --------------------------------------------------------------------------------------------------
# reading YAML with line numbers


def load_scenario_file(path) -> ScenarioFile:
    """Read and validate a scenario file; raise ScenarioFileError listing every problem with its line."""
    p = Path(path)
    try:
        if p.is_dir():
            raise ScenarioFileError(path, ["this is a folder; pass one scenario file, e.g. scenarios/context-length.yaml"])
        size = p.stat().st_size
        if size > _MAX_FILE_BYTES:
            raise ScenarioFileError(path, [f"{size} bytes is too large for a scenario file"])
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioFileError(path, ["no such file; the shipped ones are in scenarios/ (ls scenarios/*.yaml)"]) from None
    except UnicodeDecodeError:
        raise ScenarioFileError(path, ["not UTF-8 text; a scenario file is YAML"]) from None
    except OSError as exc:
        raise ScenarioFileError(path, [f"cannot read it ({exc.strerror})"]) from None
    return parse_scenario(text, path=str(path), base_dir=p.resolve().parent)


def _compose(text: str, path: str):
    import yaml

    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f"line {mark.line + 1}: " if mark is not None else ""
        what = " ".join(str(exc.problem or exc.context or "malformed YAML").split())
        raise ScenarioFileError(path, [f"{line}not valid YAML ({what})"]) from None
    except yaml.YAMLError as exc:
        raise ScenarioFileError(path, [f"not valid YAML ({' '.join(str(exc).split())})"]) from None
    return loader, node


def _line(node) -> int:
    return node.start_mark.line + 1


def parse_scenario(text: str, *, path: str = "<scenario>", base_dir=None) -> ScenarioFile:
    """Parse and validate scenario YAML text (``base_dir``: where relative config.json paths start)."""
    import yaml

    loader, root = _compose(text, path)
    if root is None:
        raise ScenarioFileError(path, ["the file is empty; start it with question: and name a model (model: 7b)"])
    if not isinstance(root, yaml.MappingNode):
        raise ScenarioFileError(path, [f"line {_line(root)}: a scenario file is a mapping of keys "
                                       f"(question:, model:, seq: ...), not a {_kind(root)}"])
    problems: list[tuple[int, str]] = []
    entries: dict[str, tuple[int, object]] = {}  # key -> (line, value node)
    for key_node, value_node in root.value:
        line = _line(key_node)
        if not isinstance(key_node, yaml.ScalarNode):
            problems.append((line, "a key must be a plain name"))
            continue
        key = str(key_node.value)
        key = _ALIASES.get(key, key)
        if key not in KEYS:
            problems.append((line, _unknown_key(key)))
            continue
        if key in entries:
            problems.append((line, f"{key} is given twice (first on line {entries[key][0]}); keep one"))
            continue
        entries[key] = (line, value_node)

    def construct(node):
        try:
            return loader.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            problems.append((_line(node), f"cannot read this value ({' '.join(str(exc).split())})"))
            return None

    question = ""
    if "question" not in entries:
        problems.append((1, "no question: say what the file answers, e.g. question: How does memory grow with "
                            "context?"))
    else:
        line, node = entries["question"]
        question = construct(node)
        if not isinstance(question, str) or not question.strip():
            problems.append((line, "question: must be a sentence of text"))
            question = ""
    source = ""
    if "source" in entries:
        line, node = entries["source"]
        source = construct(node)
        if not isinstance(source, str):
            problems.append((line, "source: must be text (where the claim comes from)"))
            source = ""

    # --- axes ---------------------------------------------------------------------------------------
    axes: dict[str, Axis] = {}
    order: list[str] = []
    for key in entries:
        if key in AXES:
            order.append(key)
    if "model" not in entries:
        problems.append((1, "no model: name one or a list, e.g. model: 7b or model: [7b, 8b]"))
    for name in AXES:
        if name not in entries:
            default = DEFAULTS.get(name)
            values = ("lora", "qlora") if name == "method" else (default,)
            if name in ("model", "gpu"):
                values = (None,)
            axes[name] = Axis(name, values, 0, given=False)
            continue
        line, node = entries[name]
        items = _items(node, construct)
        values = []
        for item_line, value in items:
            for v, err in _check_value(name, value):
                if err:
                    problems.append((item_line, err))
                else:
                    values.append(v)
        if not items:
            problems.append((line, f"{name}: the list is empty; give at least one value"))
        if name == "method":
            values = _expand_both(values)
        if len(values) > MAX_AXIS_VALUES:
            problems.append((line, f"{name}: {len(values)} values; at most {MAX_AXIS_VALUES:,} per axis"))
        axes[name] = Axis(name, tuple(values), line)

    # --- models and GPUs ------------------------------------------------------------------------------
    models: dict = {}
    if "model" in entries:
        for item_line, value in _items(entries["model"][1], construct):
            if not isinstance(value, str):
                continue
            try:
                models[value] = _load_model(value, base_dir)
            except VramplanError as exc:
                problems.append((item_line, f"model {value}: {exc}"))
                continue
            same = [k for k, v in models.items() if k != value and v.name == models[value].name]
            if same:
                problems.append((item_line, f"model {value} is {models[value].name}, like {same[0]}; list it once"))
    gpus: dict = {None: None}
    if "gpu" in entries:
        from .gpus import resolve_gpu

        gpus = {}
        seen_ids: dict = {}
        for item_line, value in _items(entries["gpu"][1], construct):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                value = str(value)  # gpu: 24 is a size, as --gpu 24 is
            if not isinstance(value, str):
                continue
            try:
                spec = resolve_gpu(value)
            except VramplanError as exc:
                problems.append((item_line, f"gpu {value}: {exc}"))
                continue
            if spec.id in seen_ids:
                problems.append((item_line, f"gpu {value} is the same card as {seen_ids[spec.id]}; list it once"))
            seen_ids[spec.id] = value
            gpus[value] = spec

    # --- zip ------------------------------------------------------------------------------------------
    units: list[tuple[str, ...]] = []
    zipped: dict[str, int] = {}
    if "zip" in entries:
        line, node = entries["zip"]
        groups = _zip_groups(node, construct, problems)
        for g_line, group in groups:
            bad = [n for n in group if n not in AXES]
            if bad:
                problems.append((g_line, f"zip: {', '.join(map(str, bad))} is not a knob; zip knobs such as "
                                         f"[seq, batch]"))
                continue
            missing = [n for n in group if n not in entries]
            if missing:
                problems.append((g_line, f"zip: {', '.join(missing)} is not given in the file; give it as a list"))
                continue
            again = [n for n in group if n in zipped or group.count(n) > 1]
            if again:
                problems.append((g_line, f"zip: {', '.join(sorted(set(again)))} is zipped twice; name each knob "
                                         f"in one group once"))
                continue
            lengths = {n: len(axes[n].values) for n in group}
            if len(set(lengths.values())) > 1:
                desc = ", ".join(f"{n} has {k} (line {axes[n].line})" for n, k in lengths.items())
                problems.append((g_line, f"zip: paired lists must be equally long: {desc}"))
                continue
            for n in group:
                zipped[n] = len(units)
            units.append(tuple(group))
    # repeated values: an axis lists each value once; a zip group lists each combination once
    for name in order:
        if name in zipped:
            continue
        counts = Counter(axes[name].values)
        dupes = sorted(str(v) for v, k in counts.items() if k > 1)
        if dupes:
            problems.append((axes[name].line, f"{name}: {', '.join(dupes)} listed more than once; list each "
                                              f"value once"))
    for group in units:
        rows = list(zip(*(axes[n].values for n in group)))
        if len(set(rows)) < len(rows):
            problems.append((axes[group[0]].line, f"zip: the lists of {', '.join(group)} repeat a combination; "
                                                  f"list each once"))
    # independent axes in file order; a zip group sits where its first member is
    placed: list[tuple[str, ...]] = []
    used: set[int] = set()
    for name in order:
        if name in zipped:
            k = zipped[name]
            if k not in used:
                used.add(k)
                placed.append(units[k])
        else:
            placed.append((name,))
    for name in AXES:  # defaults: constants, after the file's axes
        if name not in entries:
            placed.append((name,))
    units_t = tuple(placed)

    # --- columns --------------------------------------------------------------------------------------
    columns = None
    if "columns" in entries:
        from .sweep import COLUMNS

        line, node = entries["columns"]
        cols = []
        for item_line, value in _items(node, construct):
            if not isinstance(value, str) or value not in COLUMNS:
                hint = [c for c in COLUMNS if c.startswith(f"{value}_")] or difflib.get_close_matches(
                    str(value), COLUMNS, n=1)
                problems.append((item_line, f"columns: {value!r} is not a sweep column"
                                            + (f" (did you mean {hint[0]}?)" if hint else "; see vramplan sweep --help")))
            else:
                cols.append(value)
        columns = tuple(cols)

    auto_dropout = "dropout" not in entries
    sf = ScenarioFile(path=path, question=question.strip() if question else "", source=(source or "").strip(),
                      axes=axes, units=units_t, models=models, gpus=gpus, columns=columns, auto_dropout=auto_dropout)
    problems += _cross_checks(sf)  # on the values that passed their own checks
    if problems:
        problems.sort(key=lambda p: p[0])
        raise ScenarioFileError(path, [f"line {ln}: {msg}" if ln else msg for ln, msg in problems])
    return sf


def _kind(node) -> str:
    import yaml

    return {yaml.ScalarNode: "single value", yaml.SequenceNode: "list", yaml.MappingNode: "mapping"}.get(
        type(node), "node")


def _unknown_key(key: str) -> str:
    if key == "gpu_count":
        return "unknown key gpu_count; the GPU count is gpus: (and the cards are gpu:)"
    close = difflib.get_close_matches(key.replace("-", "_"), KEYS, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"unknown key {key}{hint}; keys are question, source, model, gpu, zip, columns and the knobs " \
           f"{', '.join(KNOBS)}"


def _items(node, construct) -> list[tuple[int, object]]:
    """(line, python value) of each value of a key: list items, a range's values, or the single value."""
    import yaml

    if isinstance(node, yaml.SequenceNode):
        out = []
        for item in node.value:
            if isinstance(item, yaml.ScalarNode):
                out.append((_line(item), construct(item)))
            elif isinstance(item, yaml.MappingNode):
                out.append((_line(item), _Range(construct(item))))
            else:
                out.append((_line(item), _Nested()))
        return out
    if isinstance(node, yaml.MappingNode):
        return [(_line(node), _Range(construct(node)))]
    return [(_line(node), construct(node))]


class _Range:
    """A ``{from, to, step}`` or ``{from, to, times}`` mapping, expanded by _check_value."""

    def __init__(self, spec):
        self.spec = spec


class _Nested:
    """A list inside a list: not a value."""


def _expand_both(values: list) -> list:
    out = []
    for v in values:
        for m in (("lora", "qlora") if v == "both" else (v,)):
            if m not in out or v != "both":
                out.append(m)
    return out


def _check_value(name: str, value) -> list[tuple[object, str | None]]:
    """[(value, None)] for a good value (a range gives several), or [(None, "what is wrong")]."""
    if isinstance(value, _Nested):
        return [(None, f"{name}: a list inside a list; write one flat list, or pair lists with zip:")]
    if isinstance(value, _Range):
        if name not in _INTS:
            return [(None, f"{name}: ranges ({{from, to, step}}) are for whole-number knobs "
                           f"({', '.join(_INTS)}); list the values instead")]
        return _expand_range(name, value.spec)
    if name == "model":
        if not isinstance(value, str) or not value.strip():
            return [(None, f"model: {value!r} is not a model name; use a shorthand (7b, 8b, 70b), a catalogue "
                           f"name or a config.json path")]
        return [(value, None)]
    if name == "gpu":
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            return [(None, f"gpu: {value!r} is not a GPU; use a card (rtx4090, a100-80gb) or a size (24gb)")]
        return [(str(value), None)]
    if name in _CHOICES:
        if not isinstance(value, str) or value not in _CHOICES[name]:
            hint = difflib.get_close_matches(str(value), _CHOICES[name], n=1)
            more = f" (did you mean {hint[0]}?)" if hint else ""
            return [(None, f"{name}: {value!r} is not one of {', '.join(_CHOICES[name])}{more}")]
        return [(value, None)]
    if name in _INTS:
        lo, hi, example = _INTS[name]
        if name == "gpus" and isinstance(value, str) and not value.strip().isdigit():
            return [(None, f"gpus: {value!r}: gpus is the number of GPUs; name cards with gpu:, e.g. gpu: {value}")]
        if isinstance(value, bool) or not isinstance(value, int):
            return [(None, f"{name}: {value!r} is not a whole number; e.g. {name}: {example}")]
        if name == "blocksize" and value not in BLOCKSIZES:
            return [(None, f"blocksize: {value}: bitsandbytes accepts {', '.join(map(str, BLOCKSIZES))}")]
        if not lo <= value <= hi:
            return [(None, f"{name}: {value} is out of range; use {lo} to {hi}, e.g. {name}: {example}")]
        return [(value, None)]
    if name in _BOOLS:
        if not isinstance(value, bool):
            return [(None, f"{name}: {value!r} is not true or false")]
        return [(value, None)]
    if name in _FLOATS:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return [(None, f"{name}: {value!r} is not a number")]
        value = float(value)
        if name == "dropout" and not 0.0 <= value < 1.0:
            return [(None, f"dropout: {value:g} is not a probability in [0, 1); e.g. dropout: 0.05")]
        if name == "alpha" and not value > 0:
            return [(None, f"alpha: {value:g} must be positive; e.g. alpha: 32")]
        return [(value, None)]
    if name == "targets":
        if not isinstance(value, str) or not value.strip():
            return [(None, f"targets: {value!r}: use all-linear or a comma list such as q_proj,v_proj")]
        parts = tuple(t.strip() for t in value.split(",") if t.strip())
        return [(",".join(parts), None)]
    raise AssertionError(name)  # every axis name is handled above


def _expand_range(name: str, spec) -> list[tuple[object, str | None]]:
    if not isinstance(spec, dict):
        return [(None, f"{name}: a range is a mapping such as {{from: 1024, to: 32768, times: 2}}")]
    keys = set(map(str, spec))
    allowed = {"from", "to", "step", "times"}
    if keys - allowed or not {"from", "to"} <= keys or len(keys & {"step", "times"}) != 1:
        return [(None, f"{name}: a range has from, to and one of step or times, e.g. "
                       f"{{from: 1024, to: 32768, step: 1024}} or {{from: 1024, to: 32768, times: 2}}")]
    nums = {k: spec[k] for k in keys}
    bad = [k for k, v in nums.items() if isinstance(v, bool) or not isinstance(v, int)]
    if bad:
        return [(None, f"{name}: range {', '.join(sorted(bad))} must be whole numbers")]
    lo, hi = nums["from"], nums["to"]
    if lo > hi:
        return [(None, f"{name}: range from {lo} is above to {hi}")]
    values = []
    if "step" in nums:
        step = nums["step"]
        if step < 1:
            return [(None, f"{name}: range step {step} must be at least 1")]
        if (hi - lo) // step + 1 > MAX_AXIS_VALUES:
            return [(None, f"{name}: the range has {(hi - lo) // step + 1:,} values; at most {MAX_AXIS_VALUES:,}")]
        values = list(range(lo, hi + 1, step))
    else:
        times = nums["times"]
        if times < 2:
            return [(None, f"{name}: range times {times} must be at least 2")]
        if lo < 1:
            return [(None, f"{name}: a range with times starts at 1 or more")]
        v = lo
        while v <= hi:
            values.append(v)
            v *= times
    out = []
    for v in values:
        checked = _check_value(name, v)
        if checked[0][1]:
            return checked
        out.append((v, None))
    return out


def _zip_groups(node, construct, problems) -> list[tuple[int, list]]:
    """zip: [seq, batch] (one group) or zip: [[seq, batch], [model, rank]] (several)."""
    import yaml

    if not isinstance(node, yaml.SequenceNode) or not node.value:
        problems.append((_line(node), "zip: give the knobs to pair, e.g. zip: [seq, batch] or "
                                      "zip: [[seq, batch], [model, rank]]"))
        return []
    if all(isinstance(n, yaml.ScalarNode) for n in node.value):
        groups = [(_line(node), [str(construct(n)) for n in node.value])]
    else:
        groups = []
        for n in node.value:
            if not isinstance(n, yaml.SequenceNode) or not all(isinstance(x, yaml.ScalarNode) for x in n.value):
                problems.append((_line(n), "zip: each group is a list of knob names, e.g. [seq, batch]"))
                continue
            groups.append((_line(n), [str(construct(x)) for x in n.value]))
    out = []
    for line, g in groups:
        g = [_ALIASES.get(x, x) for x in g]
        if len(g) < 2:
            problems.append((line, "zip: a group pairs two or more knobs"))
            continue
        out.append((line, g))
    return out


def _load_model(value: str, base_dir):
    """A catalogue model, or a config.json path relative to the scenario file (named by its file stem)."""
    from .models import load_model, resolve_name

    if resolve_name(value) is not None:
        return load_model(value)
    p = Path(value).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = Path(base_dir) / p
    if p.exists():
        shape = load_model(str(p))
        stem = p.parent.name if p.is_dir() else p.stem
        return replace(shape, name=stem if stem != "config" else p.parent.name)
    if value.count("/") == 1 and not value.startswith((".", "/", "~")) and not value.endswith(".json"):
        raise UnknownModelError(
            "not in the catalogue, and a sweep reads nothing from the Hub: download its config.json and name the "
            "path (relative to the scenario file), or use a catalogue model (`vramplan models`)"
        )
    return load_model(value)  # raises UnknownModelError with the usual advice


# --------------------------------------------------------------------------------------------------
# combinations the libraries refuse


def combos(sf: ScenarioFile, names) -> list[dict]:
    """The distinct combinations of some axes that occur in the grid (zip groups respected)."""
    from itertools import product

    names = list(names)
    parts = []
    for unit in sf.units:
        hit = [n for n in unit if n in names]
        if not hit:
            continue
        n_rows = len(sf.axes[unit[0]].values)
        rows = []
        for k in range(n_rows):
            row = tuple(sf.axes[n].values[k] for n in hit)
            if row not in rows:
                rows.append(row)
        parts.append((hit, rows))
    out = []
    for choice in product(*(rows for _, rows in parts)):
        d = {}
        for (hit, _), row in zip(parts, choice):
            d.update(zip(hit, row))
        out.append(d)
    return out


def _cross_checks(sf: ScenarioFile) -> list[tuple[int, str]]:
    from .memory import check_recipe, lora_groups
    from .spec import Recipe

    problems: list[tuple[int, str]] = []
    ax = sf.axes
    if sf.rows > MAX_ROWS:
        sizes = " x ".join(str(len(ax[u[0]].values)) for u in sf.units if len(ax[u[0]].values) > 1)
        big = max(sf.varying, key=lambda a: len(a.values))
        problems.append((big.line, f"the grid has {sf.rows:,} rows ({sizes}); the limit is {MAX_ROWS:,}: "
                                   f"narrow an axis or pair axes with zip:"))
    for c in combos(sf, ["gpus", "shard"]):
        if c["gpus"] > 1 and c["shard"] == "none":
            line = ax["shard"].line or ax["gpus"].line
            problems.append((line, f"gpus {c['gpus']} with shard none: say how the GPUs share the job "
                                   f"(shard: fsdp or ddp), or pair gpus and shard with zip:"))
            break
    reported = set()
    for c in combos(sf, ["model", "method", "targets", "dropout"]):
        shape = sf.models.get(c["model"])
        if shape is None or c["method"] == "full":
            continue
        targets = tuple(c["targets"].split(","))
        dropout = c["dropout"]
        if sf.auto_dropout and shape.is_moe and targets == ("all-linear",):
            dropout = 0.0
        recipe = replace(Recipe.default(c["method"]), targets=targets, dropout=dropout)
        for check, key in ((lora_groups, "targets"), (check_recipe, "dropout")):
            try:
                check(shape, recipe)
            except ScenarioError as exc:
                msg = f"{key}: {exc}"
                if msg not in reported:
                    reported.add(msg)
                    problems.append((ax[key].line or ax["model"].line, msg))
                break
    return problems
