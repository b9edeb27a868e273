"""WOQ and W8A8 Linear kernels vs an FP32 nn.Linear, with tolerances from the quantization step."""
import pytest
import torch
import torch.nn as nn

from fastpipes.kernels.woq import (Int4WeightOnlyLinear, Int8DynamicLinear, Int8WeightOnlyLinear,
                                   dequantize_int4, quantize_int4, quantize_int8)


def _lin(k=256, n=128, bias=True):
    torch.manual_seed(0)
    return torch.nn.Linear(k, n, bias=bias)


def test_int8_quantize_roundtrip_within_half_step():
    w = _lin().weight.detach()
    q, s = quantize_int8(w)
    assert q.dtype == torch.int8 and s.shape == (w.shape[0],)
    assert ((q.float() * s[:, None] - w).abs() <= s[:, None] / 2 + 1e-7).all()


@pytest.mark.parametrize("gs", [32, 64, 128])
def test_int4_quantize_roundtrip_within_half_step(gs):
    w = _lin().weight.detach()
    q, sz = quantize_int4(w, gs)
    assert q.min() >= 0 and q.max() <= 15 and sz.shape == (w.shape[1] // gs, w.shape[0], 2)
    step = sz[..., 0].t().repeat_interleave(gs, dim=1)  # [N, K]
    assert ((dequantize_int4(q, sz, gs) - w).abs() <= step / 2 + 1e-6).all()


@pytest.mark.parametrize("act", ["float32", "bfloat16"])
@pytest.mark.parametrize("bias", [True, False])
def test_int8_linear_matches_fp32(act, bias):
    lin = _lin(bias=bias)
    q = Int8WeightOnlyLinear.from_linear(lin, act_dtype=act)
    x = torch.randn(2, 5, 256)
    with torch.no_grad():
        ref, out = lin(x), q(x)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    rel = (out - ref).norm() / ref.norm()
    assert rel < (0.01 if act == "float32" else 0.02), rel


@pytest.mark.parametrize("act", ["float32", "bfloat16"])
@pytest.mark.parametrize("in_features", [256, 200])  # 200: K padded for the kernel
def test_int8_prompt_rows_take_the_dense_path_with_the_kernels_arithmetic(act, in_features):
    """Below the layer's prompt_rows the int8 kernel runs; from it on, the dense GEMM on the
    converted weight: both compute (x . w_int8) * scale, so they agree to rounding."""
    from fastpipes.kernels import woq
    lin = _lin(k=in_features)
    q = Int8WeightOnlyLinear.from_linear(lin, act_dtype=act)
    assert q.prompt_rows >= 2  # decided when built (kernels/woq_prefill.py's prompt_plan)
    x = torch.randn(q.prompt_rows, in_features)
    with torch.no_grad():
        dense = q(x)
        kernel = torch.cat([q(x[i:i + 1]) for i in range(len(x))])  # one row: the kernel
        w_int8, scales = woq.quantize_int8(lin.weight)
        exact = (x @ w_int8.float().t()) * scales + lin.bias
    assert dense.shape == kernel.shape == (q.prompt_rows, lin.out_features)
    tol = 1e-5 if act == "float32" else 1e-2
    assert ((dense - exact).norm() / exact.norm()) < tol
    assert ((dense - kernel).norm() / kernel.norm()) < tol


@pytest.mark.parametrize("act", ["float32", "bfloat16"])
@pytest.mark.parametrize("gs", [32, 128])
def test_int4_linear_matches_dequantized_and_fp32(act, gs):
    lin = _lin()
    q = Int4WeightOnlyLinear.from_linear(lin, gs, act_dtype=act)
    x = torch.randn(3, 256)
    w_int, sz = quantize_int4(lin.weight, gs)
    with torch.no_grad():
        exact = x @ dequantize_int4(w_int, sz, gs).t() + lin.bias  # the kernel's own math
        out, ref = q(x), lin(x)
    tol = 1e-4 if act == "float32" else 2e-2
    assert ((out - exact).norm() / exact.norm()) < tol
    assert ((out - ref).norm() / ref.norm()) < 0.15  # 4-bit weights: ~7% typical


def test_output_dtype_follows_caller_and_bytes_shrink():
    lin = _lin(bias=False)
    q8 = Int8WeightOnlyLinear.from_linear(lin)
    q4 = Int4WeightOnlyLinear.from_linear(lin, 64)
    x = torch.randn(1, 256, dtype=torch.bfloat16)
    assert q8(x).dtype == torch.bfloat16 and q4(x).dtype == torch.bfloat16
    assert q8.weight.numel() * 1 == lin.weight.numel()  # 1 byte per weight
    assert q4.weight.numel() * 2 == lin.weight.numel()  # 2 weights per byte


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("rows", [1, 3, 17, 64])
def test_int8_dynamic_linear_is_exactly_the_quantized_arithmetic(bias, rows):
    torch.manual_seed(0)
    lin = nn.Linear(256, 96, bias=bias)
    x = torch.randn(2, rows, 256)
    q = Int8DynamicLinear.from_linear(lin)
    out = q(x)
    assert out.shape == (2, rows, 96) and out.dtype == torch.float32
    # the same arithmetic in float: per-row activation scales, per-channel weight scales.
    # Every partial sum is below 2**24, so the float product is exact like the int32 one.
    x2 = x.reshape(-1, 256)
    xs = (x2.abs().amax(dim=1, keepdim=True) / 127.0).clamp(min=1e-8)
    xq = torch.round(x2 / xs).clamp(-127, 127)
    w_int8, ws = quantize_int8(lin.weight)
    ref = (xq @ w_int8.float().t()) * xs * ws
    if bias:
        ref = ref + lin.bias.detach()
    torch.testing.assert_close(out.reshape(-1, 96), ref, rtol=1e-6, atol=1e-5)
    # and it is close to the FP32 layer: two roundings of 1/254 of each row's / channel's range
    exact = lin(x).detach()
    assert ((out - exact).norm() / exact.norm()) < 0.02


def test_int8_dynamic_linear_keeps_the_callers_dtype_and_zero_rows():
    lin = nn.Linear(64, 32)
    q = Int8DynamicLinear.from_linear(lin)
    assert q(torch.randn(5, 64, dtype=torch.bfloat16)).dtype == torch.bfloat16
    zero = q(torch.zeros(4, 64))  # all-zero rows: the scale clamp keeps them finite
    torch.testing.assert_close(zero, lin.bias.detach().expand(4, 32))


# ---- what the CPU kernels need (int8mm_kernel.cpp / int4mm_kernel.cpp) --------------------
# Breaking it reads out of bounds: wrong numbers or SIGSEGV, so the int8 checks run in a
# child process (a crash there fails this test instead of ending the test session).

_INT8_SHAPES = """
import torch
from fastpipes.kernels.woq import Int8WeightOnlyLinear
torch.manual_seed(0)
for k, rows in [(24, 5), (40, 2), (1000, 4), (64, 5)]:
    lin = torch.nn.Linear(k, 48)
    q = Int8WeightOnlyLinear.from_linear(lin, act_dtype="bfloat16")
    # a bf16 view that starts 16 bytes into its storage: not 32-byte aligned
    buf = torch.randn(rows * k + 8).to(torch.bfloat16)
    x = buf[8:].view(rows, k)
    with torch.no_grad():
        ref, out = lin(x.float()), q(x).float()
    rel = ((out - ref).norm() / ref.norm()).item()
    print(k, rows, q.weight.shape[1], round(rel, 4), flush=True)
    assert rel < 0.02, (k, rows, rel)
"""


def test_int8_any_in_features_and_unaligned_inputs_in_a_child_process():
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", _INT8_SHAPES], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, (run.returncode, run.stdout, run.stderr[-2000:])
    padded = {int(line.split()[0]): int(line.split()[2]) for line in run.stdout.split("\n") if line}
    assert padded == {24: 32, 40: 48, 1000: 1008, 64: 64}  # K rounded up to 16


def test_int4_pads_in_features_to_the_group_size():
    torch.manual_seed(0)
    lin = nn.Linear(704, 64)  # a trained-tiny down_proj: 704 = 5.5 groups of 128
    q = Int4WeightOnlyLinear.from_linear(lin, 128, act_dtype="float32")
    assert q.k_padded == 768 and q.scales_and_zeros.shape == (6, 64, 2)
    assert q.weight.shape == (64, 384)
    x = torch.randn(3, 704)
    w_int, sz = quantize_int4(torch.nn.functional.pad(lin.weight.detach(), (0, 64)), 128)
    exact = x @ dequantize_int4(w_int, sz, 128)[:, :704].t() + lin.bias  # the padding reads zeros
    with torch.no_grad():
        out, ref = q(x), lin(x)
    assert ((out - exact).norm() / exact.norm()) < 1e-4
    assert ((out - ref).norm() / ref.norm()) < 0.15


def test_int4_refuses_out_features_the_packing_cannot_take():
    assert "multiple of 16" in Int4WeightOnlyLinear.unsupported(nn.Linear(128, 24))
    assert Int4WeightOnlyLinear.unsupported(nn.Linear(100, 48)) is None  # any K: padded
    with pytest.raises(RuntimeError, match="dividable by 16"):  # what the op itself says
        torch.ops.aten._convert_weight_to_int4pack_for_cpu(
            torch.zeros(24, 128, dtype=torch.int32), 1)
