"""Checks at the real model shapes, where tiny models can hide problems.

The kernel checks are quick and run by default; the vit_b check builds the real image
encoder and compiles it, so it carries the `slow` marker (``make test-slow``).
"""
import pytest
import torch

import fastpipes
from fastpipes.kernels.woq import (Int4WeightOnlyLinear, Int8WeightOnlyLinear, dequantize_int4,
                                   quantize_int4, quantize_int8)


@pytest.mark.parametrize("k,n", [(2048, 8192), (8192, 2048)])  # Llama-3.2-1B MLP shapes
def test_woq_kernels_match_their_dequantized_reference_at_llama_shapes(k, n):
    torch.manual_seed(0)
    lin = torch.nn.Linear(k, n, bias=False)
    lin.weight.data.normal_(0, 0.02)
    x = torch.randn(2, k)
    w_int, sz = quantize_int4(lin.weight, 128)
    ref4 = x @ dequantize_int4(w_int, sz, 128).t()
    w8, s8 = quantize_int8(lin.weight)
    ref8 = x @ (w8.float() * s8[:, None]).t()
    with torch.no_grad():
        # FP32 activations: the packed kernel computes exactly the dequantized product
        torch.testing.assert_close(Int4WeightOnlyLinear.from_linear(lin, 128, "float32")(x), ref4,
                                   rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(Int8WeightOnlyLinear.from_linear(lin, "float32")(x), ref8,
                                   rtol=1e-4, atol=1e-4)
        # BF16 activations: only activation rounding on top (measured rel. error ~3e-3)
        for q, ref in ((Int4WeightOnlyLinear.from_linear(lin, 128, "bfloat16"), ref4),
                       (Int8WeightOnlyLinear.from_linear(lin, "bfloat16"), ref8)):
            rel = ((q(x) - ref).norm() / ref.norm()).item()
            assert rel < 1e-2, rel


@pytest.mark.slow
def test_sam_fp32_fast_on_vit_b_meets_the_exact_precision_bars():
    from fastpipes.bench.workloads import WorkloadSpec, get_workload

    wl = get_workload(WorkloadSpec("sam", model="vit_b"))
    ref_pipe, fast_pipe = wl.build(), wl.build()
    inputs = wl.inputs(ref_pipe)
    reference = wl.view(ref_pipe, inputs, wl.run(ref_pipe, inputs))  # as the bench worker does
    report = fastpipes.accelerate(fast_pipe, "sam_fp32_fast")
    assert report.applied == ["attention", "compile"]
    view = wl.view(fast_pipe, inputs, wl.run(fast_pipe, inputs), reference)
    fid = wl.compare(fast_pipe, reference, view, report.precision_class)
    assert report.precision_class == "exact"
    assert fid.ok, fid.metrics  # mask IoU >= 0.99 and embedding rel. error <= 1e-3
