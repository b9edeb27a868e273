"""Prompt GEMMs of the weight-only layers (kernels/woq_prefill.py): the int4 unpacking reads
the kernel's own packing, the int4 BF16-block and int8 int_mm paths compute what the packed
kernels compute (to the rounding they add), and each path is taken from its row count."""
import pytest
import torch

from fastpipes.kernels import woq_prefill as P
from fastpipes.kernels.woq import (Int4WeightOnlyLinear, Int8WeightOnlyLinear, dequantize_int4,
                                   quantize_int4, quantize_int8)


def _lin(k, n, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Linear(k, n)


def test_int4_layout_is_read_as_this_torch_packs_it():
    assert P.int4_layout_ok()


@pytest.mark.parametrize("n,k,gs", [(144, 200, 64), (256, 256, 128), (80, 128, 32)])
def test_int4_dequantized_blocks_equal_the_reference_dequantization(n, k, gs):
    """Full 64-channel blocks and a tail block; K padded to the group size."""
    lin = _lin(k, n)
    q = Int4WeightOnlyLinear.from_linear(lin, gs)
    w_int, sz = quantize_int4(torch.nn.functional.pad(lin.weight.detach(), (0, q.k_padded - k)), gs)
    ref = dequantize_int4(w_int, sz.to(torch.bfloat16).float(), gs)  # [N, k_padded]
    got = P.dequantize_int4_t(q.weight, q.scales_and_zeros, q.k_padded, gs).float().t()
    assert torch.allclose(got, ref, atol=2e-3, rtol=1e-2)  # BF16 rounding of the result


def test_int4_bf16_blocks_match_the_packed_kernel(monkeypatch):
    monkeypatch.setattr(P, "BLOCK_ROWS", 128)  # several blocks and a tail
    lin = _lin(200, 144 + 64)
    q = Int4WeightOnlyLinear.from_linear(lin, 64)
    x = torch.randn(P.INT4_PREFILL_ROWS, 200)
    with torch.no_grad():
        blocks = P.int4_bf16_blocks(x, q.weight, q.scales_and_zeros, q.k_padded, 64).float()
        kernel = torch.ops.aten._weight_int4pack_mm_for_cpu(
            torch.nn.functional.pad(x, (0, q.k_padded - 200)).bfloat16(), q.weight, 64,
            q.scales_and_zeros).float()
    assert ((blocks - kernel).norm() / kernel.norm()) < 1e-2


def test_int8_int_mm_is_the_int8_product_within_activation_rounding():
    lin = _lin(200, 96)
    q = Int8WeightOnlyLinear.from_linear(lin)
    x = torch.randn(5, 200)
    w_int8, scales = quantize_int8(lin.weight)
    exact = (x @ w_int8.float().t()) * scales  # int8 weights, FP32 activations
    got = P.int8_int_mm(x, q.weight, q.scales)
    assert got.dtype == torch.float32
    assert ((got - exact).norm() / exact.norm()) < 2e-2  # per-row int8 activations


@pytest.mark.parametrize("plan", [("int_mm", "bf16_blocks"), ("dense", "kernel"),
                                  ("kernel", "kernel")])
def test_paths_by_rows(plan, monkeypatch):
    monkeypatch.setattr(P, "plan", lambda: plan)
    one = (P.int8_path(1), P.int4_path(1))
    assert one == ("kernel", "kernel")  # decode keeps the packed kernels
    many = (P.int8_path(4096), P.int4_path(4096))
    assert many == plan


def test_layers_use_the_prompt_path_and_agree_with_decode_rows(monkeypatch):
    """A layer's prompt output equals its row-by-row (decode-path) output to rounding."""
    monkeypatch.setattr(P, "plan", lambda: ("int_mm", "bf16_blocks"))
    calls = []
    for fn in ("int8_int_mm", "int4_bf16_blocks"):
        real = getattr(P, fn)
        monkeypatch.setattr(P, fn, lambda *a, _real=real, _fn=fn: calls.append(_fn) or _real(*a))
    lin = _lin(256, 128)
    x = torch.randn(P.INT4_PREFILL_ROWS, 256)
    for q in (Int8WeightOnlyLinear.from_linear(lin), Int4WeightOnlyLinear.from_linear(lin, 128)):
        with torch.no_grad():
            prompt = q(x)
            rows = torch.cat([q(x[i:i + 1]) for i in range(len(x))])
        assert ((prompt - rows).norm() / rows.norm()) < 2e-2, type(q).__name__
    assert calls == ["int8_int_mm", "int4_bf16_blocks"]  # once each: the prompts, not the rows
