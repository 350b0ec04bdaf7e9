"""The sweep engine: a scenario file's grid -> one pandas DataFrame with a stable schema; CSV, parquet, JSON.

The grid is grouped by its categorical knobs (model, method, every recipe field but the rank, GPU count,
sharding, and whether the GPU is Hopper or newer, which sets the cuBLAS workspace); each group is planned
with one vectorized ``grid.plan_grid`` call over numpy arrays of its sequence lengths, batch sizes and ranks.
The result equals ``plan.plan_scenario`` row for row (tests/test_sweep.py).

Schema (long format: one row per scenario and GPU; the columns never depend on the file):

- knobs: ``model, method, dtype, quant, double_quant, blocksize, kbit_prep, rank, alpha, dropout, targets,
  adapter_dtype, optimizer, grad_ckpt, attn, autocast, seq, batch, gpus, shard`` (the same names and values
  as the measurement records), then ``tokens`` (seq x batch);
- the GPU: ``gpu`` (the value in the file; empty when the file names none), ``gpu_memory_bytes``;
- ``params`` (the model) and ``trainable_params``;
- components at the peak, integer bytes, per GPU: ``weights_bytes, quant_constants_bytes, adapters_bytes,
  gradients_bytes, optimizer_bytes, activations_bytes, overhead_bytes`` (they sum to ``peak_bytes``);
- the three peaks: ``peak_bytes`` (device level, nvidia-smi), ``peak_reserved_bytes``,
  ``peak_allocated_bytes`` (torch's max_memory_reserved / max_memory_allocated), and ``peak_tensor_bytes``;
  ``peak_phase`` and ``peak_where``;
- ``fits`` and ``headroom_bytes`` against the row's GPU (empty without one);
- ``tokens_per_s``: predicted training throughput over all GPUs (``vramplan.speed``); empty without a
  catalogue card (a bare size such as ``24gb`` has no TFLOP/s or bandwidth).

The throughput is ``speed.estimate_speed`` evaluated per row: one call per group, GPU and rank gives the
seconds per FLOP, the weight reads, the dequantization and the communication of the step, which do not depend
on the sequence length or the batch; ``speed.flops_per_token`` over the group's sequence lengths gives the
rest, combined as the speed model's roofline (``max(compute, weight reads, communication) + dequantization``).
tests/test_sweep.py checks it equals ``estimate_speed`` row for row.

Knobs that a method ignores keep their values (``quant`` on a LoRA row); ``kbit_prep`` is false except for
QLoRA, and ``optimizer`` is the method's default where the file leaves it out, as on the command line.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from .errors import VramplanError
from .plan import COMPONENTS

KNOB_COLUMNS = (
    "model", "method", "dtype", "quant", "double_quant", "blocksize", "kbit_prep", "rank", "alpha", "dropout",
    "targets", "adapter_dtype", "optimizer", "grad_ckpt", "attn", "autocast", "seq", "batch", "gpus", "shard",
)
COMPONENT_COLUMNS = tuple(f"{c}_bytes" for c in COMPONENTS)
PEAK_COLUMNS = ("peak_bytes", "peak_reserved_bytes", "peak_allocated_bytes", "peak_tensor_bytes")
COLUMNS = (
    KNOB_COLUMNS + ("tokens", "gpu", "gpu_memory_bytes", "params", "trainable_params") + COMPONENT_COLUMNS
    + PEAK_COLUMNS + ("peak_phase", "peak_where", "fits", "headroom_bytes", "tokens_per_s")
)
BYTE_COLUMNS = frozenset(COMPONENT_COLUMNS + PEAK_COLUMNS + ("headroom_bytes", "gpu_memory_bytes"))
FORMATS = (".csv", ".parquet", ".json")

# Grid knobs that plan_grid takes as arrays; every other knob fixes a group.
_NUMERIC = ("seq", "batch", "rank")


class SweepOutputError(VramplanError):
    """An output path the sweep cannot write."""


@dataclass
class SweepResult:
    """The DataFrame of a sweep, and whether Ctrl-C cut it short (then ``df`` holds the finished groups).

    Example usage::

        res = run_sweep(load_scenario_file("scenarios/lora-or-qlora.yaml"))
        res.df[res.df["fits"]].groupby("model")["peak_bytes"].min()

    Known Limitations: an interrupted sweep keeps whole groups only (a group is one vectorized call); its
    ``df`` is indexed by grid position, so ``res.df.index`` says which rows are missing.
    """

    df: object
    total_rows: int
    groups_done: int
    groups_total: int
    interrupted: bool = False


def count_groups(sf) -> int:
    """How many plan_grid calls the grid needs (for progress display)."""
    return len(_group_rows(sf, _codes(sf))[0])


def _codes(sf) -> dict:
    """Per axis, the index of its value in every row of the grid (numpy int arrays, grid order)."""
    import numpy as np

    n = sf.rows
    codes = {}
    stride = n
    for unit in sf.units:
        size = len(sf.axes[unit[0]].values)
        stride //= size
        if size > 1:
            idx = (np.arange(n, dtype=np.int64) // stride) % size
        else:  # a constant: a read-only view of one zero, no memory per row
            idx = np.broadcast_to(np.int64(0), (n,))
        for name in unit:
            codes[name] = idx
    return codes


def _hopper(sf) -> list:
    """Per GPU value: 1 for sm90+ (32 MiB cuBLAS workspaces), else 0."""
    return [int(bool(sf.gpus[g] and sf.gpus[g].is_hopper_or_newer)) for g in sf.axes["gpu"].values]


def _group_rows(sf, codes):
    """(group keys, row indices per group): rows that share every categorical knob and the Hopper flag.

    The key is a mixed-radix number over the grid's units (a zip group is one unit), each reduced to the
    distinct values of its categorical knobs, so it stays below the number of rows.
    """
    import numpy as np

    n = sf.rows
    key = np.zeros(n, dtype=np.int64)
    hopper = _hopper(sf)
    for unit in sf.units:
        cat = [name for name in unit if name not in _NUMERIC]
        size = len(sf.axes[unit[0]].values)
        if not cat or size == 1:
            continue
        ids: dict = {}
        sub = []
        for k in range(size):
            t = tuple(hopper[k] if name == "gpu" else sf.axes[name].values[k] for name in cat)
            sub.append(ids.setdefault(t, len(ids)))
        if len(ids) > 1:
            key = key * len(ids) + np.asarray(sub, dtype=np.int64)[codes[unit[0]]]
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    cuts = np.flatnonzero(np.diff(sorted_key)) + 1
    return np.split(sorted_key, cuts), np.split(order, cuts)


def _recipe(sf, row: dict):
    """The Recipe of a row, built as the CLI builds it (cli._build)."""
    from .spec import Recipe

    method = row["method"]
    base = Recipe.default(method)
    shape = sf.models[row["model"]]
    targets = tuple(row["targets"].split(","))
    dropout = row["dropout"]
    if sf.auto_dropout and shape.is_moe and targets == ("all-linear",):
        dropout = 0.0  # peft cannot apply dropout to fused experts: the tutorial default would not start
    return replace(
        base, dtype=row["dtype"], quant=row["quant"], double_quant=row["double_quant"], blocksize=row["blocksize"],
        kbit_prep=row["kbit_prep"] if method == "qlora" else False, rank=row["rank"], alpha=row["alpha"],
        dropout=dropout, targets=targets, adapter_dtype=row["adapter_dtype"],
        optimizer=row["optimizer"] or base.optimizer, grad_ckpt=row["grad_ckpt"], attn=row["attn"],
        autocast=row["autocast"],
    )


def _plan_group(shape, recipe, seq, batch, rank, gpus, shard, gpu):
    from .grid import plan_grid

    return plan_grid(shape, recipe, seq=seq, batch=batch, rank=rank, gpus=gpus, shard=shard, gpu=gpu)


def run_sweep(sf, *, progress=None) -> SweepResult:
    """Plan every row of a scenario file's grid. ``progress(done_groups, total_groups)`` is called after each
    group; Ctrl-C (KeyboardInterrupt) stops the sweep and returns the rows of the groups already finished.

    Example::

        res = run_sweep(load_scenario_file("scenarios/context-length.yaml"))
        res.df[["seq", "peak_bytes", "fits"]]
    """
    import numpy as np

    n = sf.rows
    codes = _codes(sf)
    keys, groups = _group_rows(sf, codes)
    vals = {name: sf.axes[name].values for name in sf.axes}
    ints = {c: np.zeros(n, dtype=np.int64) for c in ("trainable_params",) + COMPONENT_COLUMNS + PEAK_COLUMNS}
    tps = np.full(n, np.nan)
    phase = np.empty(n, dtype=object)
    where = np.empty(n, dtype=object)
    kbit = np.zeros(n, dtype=bool)
    optimizer = np.empty(n, dtype=object)
    done = np.zeros(n, dtype=bool)
    num = {name: np.asarray(vals[name], dtype=np.int64)[codes[name]] for name in _NUMERIC}
    gpu_vals = vals["gpu"]
    groups_done = 0
    interrupted = False
    try:
        for rows in groups:
            first = int(rows[0])
            row = {name: vals[name][codes[name][first]] for name in sf.axes}
            shape = sf.models[row["model"]]
            recipe = _recipe(sf, row)
            gpu = sf.gpus[gpu_vals[codes["gpu"][first]]]
            cols = _plan_group(shape, recipe, num["seq"][rows], num["batch"][rows], num["rank"][rows],
                               row["gpus"], row["shard"], gpu)
            for c in COMPONENTS:
                ints[f"{c}_bytes"][rows] = cols[c]
            for c in PEAK_COLUMNS:
                ints[c][rows] = cols[c]
            ints["trainable_params"][rows] = cols["trainable_params"]
            phase[rows] = cols["peak_phase"]
            where[rows] = cols["peak_where"]
            _speed_into(tps, rows, shape, recipe, row, sf, codes, num)
            kbit[rows] = recipe.kbit_prep
            optimizer[rows] = recipe.optimizer
            done[rows] = True
            groups_done += 1
            if progress is not None:
                progress(groups_done, len(groups))
    except KeyboardInterrupt:
        interrupted = True
    keep = None if done.all() else np.flatnonzero(done)
    df = _frame(sf, codes, ints, phase, where, kbit, optimizer, keep, tps)
    return SweepResult(df, n, groups_done, len(groups), interrupted)


def _speed_into(tps, rows, shape, recipe, row, sf, codes, num) -> None:
    """Fill tokens/s for a group's rows from the speed model (NaN where the GPU has no speed figures)."""
    import numpy as np

    from .errors import ScenarioError
    from .spec import Scenario, Workload
    from .speed import estimate_speed, flops_per_token

    gpu_values = sf.axes["gpu"].values
    gpu_codes = codes["gpu"][rows]
    for g in np.unique(gpu_codes):
        spec = sf.gpus[gpu_values[g]]
        if spec is None:
            continue
        on_gpu = rows[gpu_codes == g]
        ranks = num["rank"][on_gpu]
        for rank in np.unique(ranks):
            sub = on_gpu[ranks == rank]
            r = replace(recipe, rank=int(rank))
            seq, batch = num["seq"][sub], num["batch"][sub]
            rep = Scenario(shape, r, Workload(int(seq[0]), int(batch[0]), row["gpus"], row["shard"]), spec)
            try:
                est = estimate_speed(rep)
            except ScenarioError:  # a bare size: no TFLOP/s or bandwidth
                break
            sec_per_flop = est.compute_seconds / (est.flops_per_token["total"] * est.tokens_per_step)
            flops = flops_per_token(Scenario(shape, r, Workload(seq, batch, row["gpus"], row["shard"]), spec))
            tokens = seq * batch
            compute = flops["total"] * tokens * sec_per_flop
            step = np.maximum(np.maximum(compute, est.weight_read_seconds), est.comm_seconds) + est.dequant_seconds
            tps[sub] = row["gpus"] * tokens / step


def _frame(sf, codes, ints, phase, where, kbit, optimizer, keep, tps):
    """Assemble the DataFrame in grid order (only the rows in ``keep`` when given)."""
    import numpy as np
    import pandas as pd

    n_rows = sf.rows if keep is None else len(keep)
    str_dtype = int(pd.__version__.split(".")[0]) >= 3  # pandas 3 infers its "str" dtype for text columns

    def take(a):
        return a if keep is None else a[keep]

    def text(values, idx):
        """Text column from a few distinct values and per-row indices, built by one take (inferring the
        dtype of a million Python strings is the slow part of a large sweep)."""
        cats = np.asarray(values, dtype=object)
        return pd.array(cats, dtype="str").take(idx) if str_dtype else cats[idx]

    def text_of(per_row):
        idx, uniques = pd.factorize(per_row)
        return text(list(uniques), idx)

    def axis(name, dtype):
        values = np.asarray(sf.axes[name].values, dtype=dtype)
        if len(values) == 1:
            return np.full(n_rows, values[0], dtype=dtype)
        return values[take(codes[name])]

    def axis_text(name):
        return text(sf.axes[name].values, take(codes[name]))

    model_codes = take(codes["model"])
    gpu_values = sf.axes["gpu"].values
    data = {
        "model": text([sf.models[m].name for m in sf.axes["model"].values], model_codes),
        "method": axis_text("method"),
        "dtype": axis_text("dtype"),
        "quant": axis_text("quant"),
        "double_quant": axis("double_quant", bool),
        "blocksize": axis("blocksize", np.int64),
        "kbit_prep": take(kbit),
        "rank": axis("rank", np.int64),
        "alpha": axis("alpha", np.float64),
        "dropout": axis("dropout", np.float64),
        "targets": axis_text("targets"),
        "adapter_dtype": axis_text("adapter_dtype"),
        "optimizer": text_of(take(optimizer)),
        "grad_ckpt": axis("grad_ckpt", bool),
        "attn": axis_text("attn"),
        "autocast": axis("autocast", bool),
        "seq": axis("seq", np.int64),
        "batch": axis("batch", np.int64),
        "gpus": axis("gpus", np.int64),
        "shard": axis_text("shard"),
    }
    data["tokens"] = data["seq"] * data["batch"]
    peak = take(ints["peak_bytes"])
    if gpu_values == (None,):
        empty = np.full(n_rows, None, dtype=object)
        data["gpu"] = empty
        data["gpu_memory_bytes"] = pd.array(empty, dtype="Int64")
        data["fits"] = pd.array(empty, dtype="boolean")
        data["headroom_bytes"] = pd.array(empty, dtype="Int64")
    else:
        gpu_codes = take(codes["gpu"])
        mem = np.asarray([sf.gpus[g].memory_bytes for g in gpu_values], dtype=np.int64)[gpu_codes]
        data["gpu"] = text([sf.gpus[g].id for g in gpu_values], gpu_codes)
        data["gpu_memory_bytes"] = pd.array(mem, dtype="Int64")
        data["fits"] = pd.array(peak <= mem, dtype="boolean")
        data["headroom_bytes"] = pd.array(mem - peak, dtype="Int64")
    data["params"] = np.asarray([sf.models[m].params for m in sf.axes["model"].values], dtype=np.int64)[model_codes]
    data["trainable_params"] = take(ints["trainable_params"])
    for c in COMPONENT_COLUMNS + PEAK_COLUMNS:
        data[c] = take(ints[c])
    data["peak_phase"] = text_of(take(phase))
    data["peak_where"] = text_of(take(where))
    data["tokens_per_s"] = take(tps)
    # an interrupted sweep keeps the grid positions of its rows as the index
    index = None if keep is None else pd.Index(keep, name="row")
    df = pd.DataFrame({c: data[c] for c in COLUMNS}, index=index, copy=False)
    df.attrs["question"] = sf.question
    return df


def sweep_file(path, *, progress=None) -> SweepResult:
    """Load, validate and run a scenario file."""
    from .scenario_file import load_scenario_file

    return run_sweep(load_scenario_file(path), progress=progress)


# --------------------------------------------------------------------------------------------------
# writers


def to_json_records(df) -> str:
    """JSON records (one object per row), integer bytes, null for empty cells."""
    return df.to_json(orient="records", indent=None)


def _file_mode(path: Path) -> int:
    """The mode of the file being replaced, or what a new file gets under the process umask."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write(df, path) -> Path:
    """Write a sweep to .csv, .parquet or .json (records), atomically: temp file in the same folder, then
    os.replace, so an interrupted write leaves the old file or the new one, never half of one."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise SweepOutputError(f"--out {path}: the format comes from the suffix; use .csv, .parquet or .json, "
                               f"e.g. --out {path.stem or 'sweep'}.parquet")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise SweepOutputError(f"--out {path}: folder {folder} does not exist; create it or pick another path")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        if suffix == ".csv":
            df.to_csv(tmp, index=False)
        elif suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        else:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(to_json_records(df))
                f.write("\n")
        os.chmod(tmp, _file_mode(path))  # mkstemp makes 0600 files; give the result the usual permissions
        os.replace(tmp, path)
    except OSError as exc:
        raise SweepOutputError(f"--out {path}: cannot write it ({exc.strerror}); pick another path") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
