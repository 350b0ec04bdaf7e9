"""The scenario files that check the QLoRA literature: our numbers, and whether each claim holds as the file says.

Each test runs one shipped file through the sweep and asserts (a) the exact bytes of the components that equal
real objects (weights, quantization constants, adapters, gradients, optimizer state), (b) the GiB figures the
file's comments print, to their two decimals, and (c) the verdict the file states, with the tolerance it states.
"""

from fractions import Fraction
from pathlib import Path

import pytest

pytest.importorskip("pandas")

from vramplan.memory import quant_constant_bytes  # noqa: E402
from vramplan.scenario_file import load_scenario_file  # noqa: E402
from vramplan.spec import Recipe  # noqa: E402
from vramplan.sweep import run_sweep  # noqa: E402

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
GB = 10**9  # the literature's "GB"
GiB = 2**30


def sweep(name):
    sf = load_scenario_file(SCENARIOS / name)
    return sf, run_sweep(sf).df


def one(df, **where):
    """The single row matching the knob values."""
    m = df
    for k, v in where.items():
        m = m[m[k] == v]
    assert len(m) == 1, where
    return m.iloc[0]


def gib2(n_bytes) -> float:
    return round(int(n_bytes) / GiB, 2)


def non_quantized(shape) -> int:
    return sum((g.numel + g.bias) * g.count for g in shape.groups if not g.quantized and not g.tied)


def quantized(shape) -> int:
    return sum(g.numel * g.count for g in shape.groups if g.quantized)


def test_weights_7b():
    # Claim: fp16 weights of a 7B ~14 GB; 4-bit ~3.5 GB raw, 3.5-5 GB in practice.
    sf, df = sweep("weights-7b.yaml")
    llama = sf.models["7b"]
    rope = 2 * 4 * (llama.head_dim // 2)  # inv_freq + original_inv_freq, fp32
    lora = one(df, model="llama-2-7b", method="lora")
    assert lora["weights_bytes"] == 2 * llama.params + rope == 13_476_831_744
    # "~14 GB" holds in decimal GB within 5 % for both 7B models, but not read as GiB (12.55 and 13.50)
    for name in ("llama-2-7b", "mistral-7b-v0.3"):
        w = one(df, model=name, method="lora")["weights_bytes"]
        assert abs(w / GB - 14) / 14 < 0.05
        assert w / GiB < 14 * 0.97
    assert gib2(lora["weights_bytes"]) == 12.55
    # 4-bit: packed linears (n/2 bytes) + 16-bit embeddings, lm_head, norms; kbit prep makes those fp32
    q = one(df, model="llama-2-7b", method="qlora", kbit_prep=False, double_quant=True)
    assert quantized(llama) // 2 == 3_238_002_688  # what "3.5 GB raw" should have counted: 0.5 B x 6.48 B params
    assert q["weights_bytes"] == quantized(llama) // 2 + 2 * non_quantized(llama) + rope == 3_762_823_680
    assert q["quant_constants_bytes"] == 103_013_248
    qk = one(df, model="llama-2-7b", method="qlora", kbit_prep=True, double_quant=True)
    assert qk["weights_bytes"] - q["weights_bytes"] == 2 * non_quantized(llama) == 524_820_480
    # "3.5-5 GB in practice": holds for every 4-bit Llama-2-7B recipe, and Mistral-7B but one (by 0.7 MB) ...
    fourbit = df[df["method"] == "qlora"]
    base = fourbit["weights_bytes"] + fourbit["quant_constants_bytes"]
    holds = (base >= 3.5 * GB) & (base <= 5 * GB)
    assert holds[fourbit["model"] == "llama-2-7b"].all()
    m = fourbit[(fourbit["model"] == "mistral-7b-v0.3") & ~holds[fourbit.index]]
    assert list(zip(m["kbit_prep"], m["double_quant"])) == [(True, False)]
    assert int(base[m.index[0]]) - 5 * GB == 690_176
    # ... and fails for Llama-3.1-8B with kbit prep: 1.05 B embedding + lm_head params in fp32
    e = fourbit[(fourbit["model"] == "llama-3.1-8b") & fourbit["kbit_prep"]]
    assert (base[e.index] > 7.8 * GB).all()
    assert non_quantized(sf.models["8b"]) * 4 > 4.2 * GB
    # the training peak at 2k tokens of Llama-2-7B is 6.3-8.0 GB in these recipes
    peaks = fourbit[fourbit["model"] == "llama-2-7b"]["peak_bytes"]
    assert 6.3 * GB < peaks.min() and peaks.max() < 8.0 * GB


def test_qlora_7b_24gb_budget():
    # Claim: 4.2 GB base + 0.2 GB adapters + ~10 GB activations fits 24 GB.
    _, df = sweep("qlora-7b-24gb.yaml")
    r16 = one(df, rank=16, seq=2048, batch=1)
    base = r16["weights_bytes"] + r16["quant_constants_bytes"]
    assert base == 4_390_657_408 and abs(base / GB - 4.2) / 4.2 < 0.05  # holds within 5 %
    assert r16["adapters_bytes"] == 4 * r16["trainable_params"] == 159_907_840  # fp32, r=16: "0.2 GB" holds
    assert abs(r16["adapters_bytes"] / GB - 0.2) < 0.05
    r64 = one(df, rank=64, seq=2048, batch=1)
    assert r64["adapters_bytes"] == 639_631_360 and r64["adapters_bytes"] / GB > 0.6  # ... at r=64 it does not
    # paged AdamW 32-bit: 8 bytes per adapter parameter, left out of the claim
    assert r16["optimizer_bytes"] == 8 * r16["trainable_params"] == 319_815_680
    assert r64["optimizer_bytes"] == 8 * r64["trainable_params"]
    # activations are linear in tokens: ~10 GB is between 8k and 16k tokens per micro-batch
    act = {t: one(df, rank=16, seq=2048, batch=t // 2048)["activations_bytes"] for t in (2048, 4096, 8192, 16384)}
    assert [round(a / GB, 2) for a in act.values()] == [2.16, 4.05, 7.85, 15.58]
    assert act[8192] < 10 * GB < act[16384]
    assert one(df, rank=16, seq=2048, batch=4)["peak_bytes"] / GB == pytest.approx(13.66, abs=0.005)
    # every grid point up to 16k tokens fits the RTX 4090; 32k tokens does not
    tokens = df["seq"] * df["batch"]
    assert df[tokens <= 16384]["fits"].all() and not df[tokens > 16384]["fits"].any()
    small = df[tokens <= 16384]["overhead_bytes"]
    assert 0.59 * GB < small.min() and small.max() < 1.34 * GB  # "0.6-1.3 GB up to 16k tokens"
    assert gib2(one(df, rank=16, seq=2048, batch=8)["peak_bytes"]) == 20.29
    assert gib2(one(df, rank=64, seq=2048, batch=8)["peak_bytes"]) == 21.67
    assert gib2(one(df, rank=16, seq=4096, batch=8)["peak_bytes"]) == 35.53


def test_full_finetune_8b_and_65b():
    # Claims: 8B full fine-tuning ~16 + 16 + 64 GB; 65B >780 GB in 16-bit, <48 GB with QLoRA.
    sf, df = sweep("full-vs-lora-8b.yaml")
    p8 = sf.models["8b"].params
    full32 = one(df, model="llama-3.1-8b", method="full", optimizer="adamw_32bit")
    fullt = one(df, model="llama-3.1-8b", method="full", optimizer="adamw")
    assert full32["weights_bytes"] == 2 * p8 + 512 == 16_060_523_008
    assert full32["gradients_bytes"] == 2 * p8 == 16_060_522_496
    assert full32["optimizer_bytes"] == 8 * p8 == 64_242_089_984  # fp32 exp_avg + exp_avg_sq: "64 GB" holds
    for got, claim in ((full32["weights_bytes"], 16), (full32["gradients_bytes"], 16), (full32["optimizer_bytes"], 64)):
        assert abs(got / GB - claim) / claim < 0.01
    # torch AdamW on a bf16 model keeps bf16 states: half, plus a 4-byte step per tensor (fused)
    assert fullt["optimizer_bytes"] == 4 * p8 + 4 * 291
    assert (gib2(fullt["peak_bytes"]), gib2(full32["peak_bytes"])) == (61.67, 91.58)
    assert full32["activations_bytes"] + full32["overhead_bytes"] == pytest.approx(2.0 * GB, abs=0.05 * GB)
    assert not full32["fits"] and fullt["fits"]  # 98.3 GB does not fit an 80 GB A100; 66.2 GB does
    assert round(one(df, model="llama-3.1-8b", method="lora", optimizer="adamw")["peak_bytes"] / GB, 2) == 21.03
    assert gib2(one(df, model="llama-3.1-8b", method="qlora", optimizer="adamw")["peak_bytes"]) == 13.45
    p65 = sf.models["models/llama-65b.json"].params
    assert 12 * p65 / GB == pytest.approx(783.4, abs=0.05)
    f65 = one(df, model="llama-65b", method="full", optimizer="adamw_32bit")
    assert f65["peak_bytes"] > 780 * GB and round(f65["peak_bytes"] / GB, 1) == 791.6
    q65 = one(df, model="llama-65b", method="qlora", optimizer="adamw")
    assert q65["peak_bytes"] < 48 * GB and round(q65["peak_bytes"] / GB, 2) == 45.96
    assert gib2(q65["peak_bytes"]) == 42.80


def test_double_quant_saves_0373_bits():
    # Claim: 32/64 - (8/64 + 32/(64*256)) = 0.373 bits per parameter, about 3 GB on a 65B model.
    assert Fraction(32, 64) - (Fraction(8, 64) + Fraction(32, 64 * 256)) == Fraction(191, 512)  # 0.373046875
    sf, df = sweep("double-quant-65b.yaml")
    shape = sf.models["models/llama-65b.json"]
    recipe = Recipe.default("qlora")
    from dataclasses import replace

    without = quant_constant_bytes(shape, replace(recipe, double_quant=False))
    with_dq = quant_constant_bytes(shape, recipe)
    assert (without, with_dq) == (4_047_539_200, 1_028_297_920)
    n = quantized(shape)
    tensors = sum(g.count for g in shape.groups if g.quantized)
    assert (n, tensors) == (64_760_053_760, 560)
    # exactly the paper's 191/512 bit per quantized parameter, less the 1,028 B of maps each tensor carries
    assert without - with_dq == n * 191 // 4096 - 1028 * tensors == 3_019_241_280
    assert (without - with_dq) * 8 / n == pytest.approx(0.373, abs=1e-4)
    assert (without - with_dq) * 8 / shape.params == pytest.approx(0.370, abs=1e-3)
    assert (without - with_dq) / GB == pytest.approx(3.0, rel=0.01)  # "about 3 GB" holds in decimal GB
    assert gib2(without - with_dq) == 2.81
    # the sweep shows the same bytes
    off = one(df, model="llama-65b", double_quant=False)
    on = one(df, model="llama-65b", double_quant=True)
    assert (off["quant_constants_bytes"], on["quant_constants_bytes"]) == (without, with_dq)
    saving = {m: one(df, model=m, double_quant=False)["quant_constants_bytes"]
              - one(df, model=m, double_quant=True)["quant_constants_bytes"] for m in set(df["model"])}
    assert {m: round(v / GB, 2) for m, v in saving.items()} == {
        "llama-65b": 3.02, "llama-3.1-70b": 3.19, "llama-3.1-8b": 0.33, "llama-2-7b": 0.30}


def test_65b_on_one_48gb_gpu():
    # Claim: QLoRA fine-tunes a 65B model on a single 48 GB GPU.
    _, df = sweep("65b-on-48gb.yaml")
    table = {  # (kbit_prep, double_quant) -> (batch 1, batch 4) peaks in GiB, as the file prints them
        (False, True): (42.25, 44.10), (False, False): (45.05, 46.90),
        (True, True): (43.32, 48.02), (True, False): (46.12, 50.82),
    }
    for (kbit, dq), peaks in table.items():
        got = tuple(gib2(one(df, gpu="rtxa6000", kbit_prep=kbit, double_quant=dq, batch=b)["peak_bytes"])
                    for b in (1, 4))
        assert got == peaks, (kbit, dq)
    paper = one(df, gpu="rtxa6000", kbit_prep=False, double_quant=True, batch=1)
    fixed = sum(paper[c] for c in ("weights_bytes", "quant_constants_bytes", "adapters_bytes", "optimizer_bytes"))
    assert gib2(fixed) == 39.54
    # the verdicts: the paper's recipe fits both 48 GB-class cards at batch 1; without double quant, not the L40S
    assert one(df, gpu="l40s", kbit_prep=False, double_quant=True, batch=1)["fits"]
    assert not one(df, gpu="l40s", kbit_prep=False, double_quant=False, batch=1)["fits"]
    assert one(df, gpu="rtxa6000", kbit_prep=False, double_quant=True, batch=4)["fits"]
    assert not one(df, gpu="rtxa6000", kbit_prep=True, double_quant=True, batch=4)["fits"]
    assert (gib2(paper["headroom_bytes"]), gib2(one(df, gpu="rtxa6000", kbit_prep=False, double_quant=True,
                                                        batch=4)["headroom_bytes"])) == (5.74, 3.89)


def test_65b_context_edge():
    # 65b-on-48gb.yaml: "4k tokens per micro-batch is the edge: 47.92 GiB at seq 4096 (0.07 GiB to spare),
    # 49.88 GiB at seq 5120" (the paper's recipe, batch 1, RTX A6000)
    from dataclasses import replace

    from vramplan.gpus import resolve_gpu
    from vramplan.plan import plan_scenario
    from vramplan.spec import Scenario, Workload

    sf = load_scenario_file(SCENARIOS / "65b-on-48gb.yaml")
    recipe = replace(Recipe.default("qlora"), rank=64, alpha=16, adapter_dtype="bf16", kbit_prep=False)
    plans = [plan_scenario(Scenario(sf.models["models/llama-65b.json"], recipe, Workload(seq=s), resolve_gpu("rtxa6000")))
             for s in (4096, 5120)]
    assert [gib2(p.peak_bytes) for p in plans] == [47.92, 49.88]
    assert gib2(plans[0].headroom_bytes) == 0.07 and plans[0].fits and not plans[1].fits


def test_70b_fsdp_on_two_24gb_gpus():
    # Claim: FSDP + QLoRA trains a 70B model on two 24 GB GPUs.
    _, df = sweep("70b-fsdp-2x24gb.yaml")
    table = {  # (model, kbit_prep) -> peaks per GPU at seq 512, 1024, 2048 (GiB), as the file prints them
        ("llama-2-70b", False): (22.33, 23.27, 25.13), ("llama-2-70b", True): (24.56, 26.26, 29.65),
        ("llama-3.1-70b", False): (29.23, 29.23, 31.09), ("llama-3.1-70b", True): (39.01, 39.01, 41.64),
    }
    for (model, kbit), peaks in table.items():
        rows = [one(df, model=model, gpu="rtx4090", kbit_prep=kbit, seq=s) for s in (512, 1024, 2048)]
        assert tuple(gib2(r["peak_bytes"]) for r in rows) == peaks, (model, kbit)
    fits = df[df["gpu"] == "rtx4090"].groupby(["model", "kbit_prep"])
    longest = {k: int(g[g["fits"]]["seq"].max()) if g["fits"].any() else 0 for k, g in fits}
    assert longest == {("llama-2-70b", False): 1024, ("llama-2-70b", True): 0,
                       ("llama-3.1-70b", False): 0, ("llama-3.1-70b", True): 0}
    assert gib2(one(df, model="llama-2-70b", gpu="rtx4090", kbit_prep=False, seq=1024)["headroom_bytes"]) == 0.72
    l3 = df[df["model"] == "llama-3.1-70b"]
    # below 2k tokens the peak is the root's all-gather (its buffer beside the unsharded copy), then the loss
    assert (l3[l3["seq"] < 2048]["peak_where"] == "root all-gather").all()
    assert (l3[l3["seq"] >= 2048]["peak_where"] == "log_softmax backward").all()
    shape = load_scenario_file(SCENARIOS / "70b-fsdp-2x24gb.yaml").models["70b"]
    root = sum(g.numel for g in shape.groups if g.kind in ("embedding", "lm_head"))
    assert (round(root / 1e9, 1), gib2(2 * root)) == (2.1, 3.91)
    up = one(df, model="llama-3.1-70b", gpu="rtx4090", kbit_prep=True, seq=2048)["weights_bytes"]
    down = one(df, model="llama-3.1-70b", gpu="rtx4090", kbit_prep=False, seq=2048)["weights_bytes"]
    assert gib2(up - down) == 5.87


def test_context_length_1k_to_32k():
    # Question: how does 7B QLoRA memory grow from 1k to 32k tokens, and where do activations and the loss take over?
    sf, df = sweep("context-length.yaml")
    table = {"llama-2-7b": (6.24, 7.16, 9.02, 12.72, 20.29, 35.53),
             "llama-3.1-8b": (11.36, 13.45, 17.61, 25.95, 42.62, 75.96)}
    seqs = (1024, 2048, 4096, 8192, 16384, 32768)
    a100 = df[df["gpu"] == "a100-80gb"]
    for model, peaks in table.items():
        rows = [one(a100, model=model, seq=s) for s in seqs]
        assert tuple(gib2(r["peak_bytes"]) for r in rows) == peaks
        static = {int(r["weights_bytes"] + r["quant_constants_bytes"]) for r in rows}
        assert len(static) == 1  # the weights do not move with context
    llama = {s: one(a100, model="llama-2-7b", seq=s) for s in seqs}
    base = llama[1024]["weights_bytes"] + llama[1024]["quant_constants_bytes"]
    assert gib2(base) == 4.09
    # activations pass the weights between 4k and 8k tokens; the peak moves from the loss to the layers at 4k
    assert llama[4096]["activations_bytes"] < base < llama[8192]["activations_bytes"]
    assert [llama[s]["peak_where"] for s in seqs] == ["log_softmax backward"] * 4 + ["last decoder layer"] * 2
    # the 128k vocabulary: the loss is the peak at every length, 12 B per logit
    l3 = a100[a100["model"] == "llama-3.1-8b"]
    assert (l3["peak_where"] == "log_softmax backward").all()
    assert round(12 * sf.models["8b"].vocab_size * 1024 / GiB, 2) == 1.47
    # a 24 GB card: 7B fits to 16k tokens, 8B to 4k; at 32k the 8B leaves 4.04 GiB on an 80 GB A100
    r4090 = df[df["gpu"] == "rtx4090"]
    assert r4090[r4090["fits"]].groupby("model")["seq"].max().to_dict() == {"llama-2-7b": 16384,
                                                                           "llama-3.1-8b": 4096}
    assert gib2(one(a100, model="llama-3.1-8b", seq=32768)["headroom_bytes"]) == 4.04


def test_when_qlora_is_worth_it():
    # Question: when does QLoRA stop being worth it? Worth it = LoRA does not fit and QLoRA does.
    _, df = sweep("lora-or-qlora.yaml")
    peaks = {"llama-3.2-1b": (6.17, 5.96), "llama-3.2-3b": (10.22, 8.18), "llama-3.1-8b": (19.58, 13.45),
             "qwen2.5-14b": (33.48, 20.63), "qwen2.5-32b": (68.05, 30.66), "llama-3.1-70b": (140.02, 54.01)}
    for model, (lora, qlora) in peaks.items():
        got = tuple(gib2(one(df, model=model, gpu="a100-80gb", method=m)["peak_bytes"]) for m in ("lora", "qlora"))
        assert got == (lora, qlora), model
    worth = set()
    for (model, gpu), g in df.groupby(["model", "gpu"]):
        lora, qlora = one(g, method="lora"), one(g, method="qlora")
        if not lora["fits"] and qlora["fits"]:
            worth.add((model, gpu))
        # dequantizing every 4-bit weight before each use costs time: QLoRA is never faster here
        assert 0.90 < qlora["tokens_per_s"] / lora["tokens_per_s"] < 1.0, (model, gpu)
    assert worth == {("qwen2.5-14b", "rtx4090"), ("llama-3.1-70b", "a100-80gb"), ("llama-3.1-70b", "h100")}
    one_b = {m: one(df, model="llama-3.2-1b", gpu="rtx4090", method=m) for m in ("lora", "qlora")}
    assert gib2(one_b["lora"]["peak_bytes"] - one_b["qlora"]["peak_bytes"]) == 0.21
    assert gib2(one_b["lora"]["weights_bytes"] - one_b["qlora"]["weights_bytes"]) == 0.87
    assert gib2(one_b["qlora"]["activations_bytes"] - one_b["lora"]["activations_bytes"]) == 0.61
