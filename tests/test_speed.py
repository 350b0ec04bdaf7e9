"""Speed model: FLOP counts by hand, and the relations a roofline must keep."""

from dataclasses import replace

import pytest

from vramplan.errors import ScenarioError
from vramplan.gpus import resolve_gpu
from vramplan.models import load_model
from vramplan.speed import (BANDWIDTH_EFFICIENCY, LINK_EFFICIENCY, MATMUL_EFFICIENCY, estimate_speed,
                            flops_per_token)
from vramplan.spec import Recipe, Scenario, Workload

# Llama-3.2-1B: hidden 2048, intermediate 8192, 16 layers, 32 heads x 64, 8 kv heads, vocab 128256
H, I, L, KV, V = 2048, 8192, 16, 512, 128256
LIN = L * (2 * H * H + 2 * KV * H + 3 * I * H)  # q, o + k, v + gate, up, down
HEAD = V * H
ADAPTERS = L * 16 * ((H + H) + (H + KV) + (H + KV) + (H + H) + (H + I) + (H + I) + (I + H))  # r (in + out)


def _s(method="lora", seq=2048, batch=1, gpu="rtx4090", model="1b", **kw):
    r = replace(Recipe.default(method), **kw)
    return Scenario(load_model(model), r, Workload(seq, batch), resolve_gpu(gpu))


def test_flops_per_token_by_hand():
    f = flops_per_token(_s())
    assert LIN == 973_078_528 and HEAD == 262_668_288 and ADAPTERS == 11_272_192
    attn = 2 * 2 * 2048 * (2048 + 1) // 2 * L  # QK^T and AV, 2 FLOPs per MAC, causal: (S+1)/2 keys per query
    assert f["forward_linear"] == 2 * LIN
    assert f["forward_head"] == 2 * HEAD
    assert f["forward_attention"] == attn == 134_283_264
    assert f["forward_adapters"] == 2 * ADAPTERS
    assert f["backward_linear"] == 2 * LIN  # frozen: activation gradients only
    assert f["backward_head"] == 2 * HEAD
    assert f["backward_attention"] == attn * 5 // 2  # SDPA backward recomputes the scores
    assert f["backward_adapters"] == 4 * ADAPTERS
    assert f["recompute"] == 2 * LIN + attn + 2 * ADAPTERS
    assert f["total"] == 7_583_596_544


def test_eager_attention_sees_every_key():
    f = flops_per_token(_s(attn="eager"))
    assert f["forward_attention"] == 2 * 2 * 2048 * 2048 * L
    assert f["backward_attention"] == 2 * f["forward_attention"]


def test_checkpointing_costs():
    # full fine-tuning: recompute is the textbook third of forward + backward (2N on 6N) for the linears
    full, full_nock = flops_per_token(_s("full")), flops_per_token(_s("full", grad_ckpt=False))
    assert full_nock["recompute"] == 0
    f8, f8_nock = flops_per_token(_s("full", model="8b")), flops_per_token(_s("full", model="8b", grad_ckpt=False))
    extra = (f8["total"] - f8_nock["total"]) / f8_nock["total"]
    assert 0.30 < extra < 1 / 3  # Llama-3.1-8B: the lm_head is not recomputed, attention backward is 2.5x
    assert (full["recompute"] - full["forward_attention"]) / (full["forward_linear"] + full["backward_linear"]) == 1 / 3
    # frozen base: no weight gradients, so the recompute is half of forward + backward of the linears
    lora, lora_nock = flops_per_token(_s(model="8b")), flops_per_token(_s(model="8b", grad_ckpt=False))
    extra = (lora["total"] - lora_nock["total"]) / lora_nock["total"]
    assert 0.45 < extra < 0.5
    assert (lora["recompute"] - lora["forward_attention"] - lora["forward_adapters"]) / (
        lora["forward_linear"] + lora["backward_linear"]) == 0.5


def test_step_time_by_hand_and_roofline():
    s = _s(batch=8)
    e = estimate_speed(s)
    g = s.gpu
    tokens = 2048 * 8
    assert e.compute_seconds == pytest.approx(7_583_596_544 * tokens / (g.bf16_tflops * 1e12 * MATMUL_EFFICIENCY))
    reads = (3 * LIN * 2 + 2 * HEAD * 2) / (g.bandwidth_gbps * 1e9 * BANDWIDTH_EFFICIENCY)
    assert e.weight_read_seconds == pytest.approx(reads)
    assert e.dequant_seconds == 0 and e.comm_seconds == 0
    assert e.step_seconds == pytest.approx(max(e.compute_seconds, reads))
    assert e.bound == "compute"
    assert e.tokens_per_second == pytest.approx(tokens / e.step_seconds)


def test_qlora_is_slower_than_lora_by_the_dequantization():
    lora, qlora = estimate_speed(_s()), estimate_speed(_s("qlora"))
    assert qlora.tokens_per_second < lora.tokens_per_second
    assert qlora.compute_seconds == pytest.approx(lora.compute_seconds)  # same FLOPs
    q_numel = LIN
    from vramplan import memory as m

    qc = m.quant_constant_bytes(load_model("1b"), Recipe.default("qlora"))
    bw = 1008 * 1e9 * BANDWIDTH_EFFICIENCY  # RTX 4090
    assert qlora.dequant_seconds == pytest.approx(3 * (q_numel // 2 + 2 * q_numel + qc) / bw)


def test_time_scales_with_tokens_and_memory_bound_at_tiny_batches():
    e = estimate_speed(_s())
    assert e.seconds_for(2e8) == pytest.approx(2 * e.seconds_for(1e8))
    big = estimate_speed(_s(batch=16))
    # compute-bound: doubling the micro-batch doubles the step time and leaves tokens/s alone
    assert estimate_speed(_s(batch=32)).step_seconds == pytest.approx(2 * big.step_seconds)
    tiny = estimate_speed(_s(seq=16))
    assert tiny.bound == "memory" and tiny.tokens_per_second < e.tokens_per_second
    with pytest.raises(ScenarioError, match="positive number of training tokens"):
        e.seconds_for(-1)


def test_fsdp_communication_by_hand():
    s = Scenario(load_model("70b"), Recipe.default("qlora"), Workload(2048, 1, 4, "fsdp"), resolve_gpu("rtx4090"))
    e = estimate_speed(s)
    from vramplan import memory as m

    params = m.base_weight_bytes(s.model, s.recipe) + m.lora_adapter_bytes(s.model, s.recipe, 16)
    grads = m.gradient_bytes(s.model, s.recipe, 16)
    assert e.comm_seconds == pytest.approx(0.75 * (2 * params + grads) / (31.5e9 * LINK_EFFICIENCY))
    assert e.assumptions["interconnect"] == "PCIe 4.0 x16"
    assert e.tokens_per_second == pytest.approx(4 * 2048 / e.step_seconds)
    ddp = estimate_speed(replace(s, model=load_model("8b"), workload=Workload(2048, 1, 2, "ddp"),
                                 gpu=resolve_gpu("h100")))
    g8 = m.gradient_bytes(load_model("8b"), s.recipe, 16)
    assert ddp.comm_seconds == pytest.approx(2 * 0.5 * g8 / (450e9 * LINK_EFFICIENCY))  # NVLink 4


def test_faster_card_is_faster():
    assert estimate_speed(_s(gpu="h100")).tokens_per_second > estimate_speed(_s(gpu="rtx3060")).tokens_per_second


def test_bare_size_has_no_speed():
    with pytest.raises(ScenarioError, match="use e.g. --gpu rtx4090"):
        estimate_speed(_s(gpu="24gb"))


def test_offload_adds_host_transfers():
    from vramplan import memory as m

    base = Scenario(load_model("70b"), replace(Recipe.default("qlora"), kbit_prep=False),
                    Workload(2048, 1, 1, "fsdp", offload=True), resolve_gpu("rtx4090"))
    e = estimate_speed(base)
    params = m.base_weight_bytes(base.model, base.recipe) + m.lora_adapter_bytes(base.model, base.recipe, 16)
    grads = m.gradient_bytes(base.model, base.recipe, 16)
    assert e.comm_seconds == pytest.approx((2 * params + grads) / (31.5e9 * LINK_EFFICIENCY))
    assert e.assumptions["host_link_gbps"] == 31.5
    h100 = estimate_speed(replace(base, gpu=resolve_gpu("h100")))
    assert h100.assumptions["host_link_gbps"] == 63.0  # SXM cards reach the CPU over PCIe 5.0, not NVLink


def test_efficiencies_can_be_calibrated():
    s = _s(batch=8)
    base = estimate_speed(s)
    cal = estimate_speed(s, matmul_efficiency=0.8, bandwidth_efficiency=0.4)
    assert cal.compute_seconds == pytest.approx(base.compute_seconds / 2)
    assert cal.weight_read_seconds == pytest.approx(base.weight_read_seconds * 2)
    assert cal.assumptions["matmul_efficiency"] == 0.8
    with pytest.raises(ScenarioError, match="matmul_efficiency 1.5: use a fraction"):
        estimate_speed(s, matmul_efficiency=1.5)
