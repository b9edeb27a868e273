"""Prompt GEMMs of the weight-only layers (kernels/woq_prefill.py): the int4 unpacking reads
the kernel's own packing, the dense paths compute what the packed kernels compute (to the
rounding of their GEMM dtype), each layer's path is decided when it is built (its forward
reads two attributes and the row count: a compiled decode has no graph break), and the
prompt path keeps a trained model within its class's bars."""
import pytest
import torch

from fastpipes.kernels import woq_prefill as P
from fastpipes.kernels.woq import (Int4WeightOnlyLinear, Int8WeightOnlyLinear, dequantize_int4,
                                   quantize_int4, quantize_int8)


def _lin(k, n, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Linear(k, n)


def _rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def test_int4_layout_is_read_as_this_torch_packs_it():
    assert P.int4_layout_ok()


@pytest.mark.parametrize("n,k,gs", [(144, 200, 64), (256, 256, 128), (80, 128, 32)])
def test_int4_dequantized_weight_equals_the_reference_dequantization(n, k, gs):
    """Full 64-channel blocks and a tail block; K padded to the group size."""
    lin = _lin(k, n)
    q = Int4WeightOnlyLinear.from_linear(lin, gs)
    w_int, sz = quantize_int4(torch.nn.functional.pad(lin.weight.detach(), (0, q.k_padded - k)), gs)
    ref = dequantize_int4(w_int, sz.to(torch.bfloat16).float(), gs)  # [N, k_padded]
    got = P.dequantize_int4_t(q.weight, q.scales_and_zeros, q.k_padded, gs, torch.float32).t()
    assert torch.allclose(got, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("act,tol", [("bfloat16", 1e-2), ("float32", 1e-5)])
def test_int4_dense_matches_the_packed_kernel(act, tol, monkeypatch):
    monkeypatch.setattr(P, "BLOCK_ROWS", 128)  # several blocks and a tail block
    lin = _lin(200, 144 + 64)
    q = Int4WeightOnlyLinear.from_linear(lin, 64, act_dtype=act)
    x = torch.randn(40, 200)
    with torch.no_grad():
        dense = P.int4_dense(x, q.weight, q.scales_and_zeros, q.k_padded, 64, q.act_dtype)
        kernel = torch.ops.aten._weight_int4pack_mm_for_cpu(
            torch.nn.functional.pad(x, (0, q.k_padded - 200)).to(q.act_dtype), q.weight, 64,
            q.scales_and_zeros)
    assert dense.dtype == torch.float32 and _rel(dense, kernel) < tol


@pytest.mark.parametrize("act,tol", [("bfloat16", 1e-2), ("float32", 1e-6)])
def test_int8_dense_is_the_int8_product_without_touching_the_activations(act, tol, monkeypatch):
    """(x . w_int8) * scale, as the kernel computes; FP32 activations stay FP32 (no int8
    activations: that would be W8A8, another class)."""
    monkeypatch.setattr(P, "BLOCK_ROWS", 32)
    lin = _lin(200, 96)
    q = Int8WeightOnlyLinear.from_linear(lin, act_dtype=act)
    x = torch.randn(5, 200)
    w_int8, scales = quantize_int8(lin.weight)
    exact = (x @ w_int8.float().t()) * scales.to(q.act_dtype).float()
    got = P.int8_dense(x, q.weight, q.scales, 200, q.act_dtype)
    assert got.dtype == torch.float32 and _rel(got, exact) < tol


def test_prompt_plan_per_machine_and_activation_dtype(monkeypatch):
    bf16, fp32 = torch.bfloat16, torch.float32
    for kind in ("int8", "int4"):
        rows = P.FROM_ROWS[kind]
        assert rows >= 2  # one-row decode always keeps the packed kernel
        assert P.prompt_plan(kind, bf16, bf16_native=True) == (rows, bf16)
        assert P.prompt_plan(kind, fp32, bf16_native=True) == (rows, fp32)
        assert P.prompt_plan(kind, bf16, bf16_native=False) == (rows, fp32)  # no slow BF16 GEMM
    monkeypatch.setattr(P, "int4_layout_ok", lambda: False)
    assert P.prompt_plan("int4", bf16, bf16_native=True) == (P.NEVER, bf16)


def test_layers_take_the_dense_path_from_prompt_rows_and_agree_with_decode_rows(monkeypatch):
    """A layer's prompt output equals its row-by-row (packed kernel) output to rounding."""
    calls = []
    for fn in ("int8_dense", "int4_dense"):
        real = getattr(P, fn)
        monkeypatch.setattr(P, fn, lambda *a, _real=real, _fn=fn: calls.append(_fn) or _real(*a))
    lin = _lin(256, 128)
    for q in (Int8WeightOnlyLinear.from_linear(lin), Int4WeightOnlyLinear.from_linear(lin, 128)):
        assert q.prompt_rows >= 2 and "prompts from" in repr(q)
        x = torch.randn(q.prompt_rows, 256)
        with torch.no_grad():
            prompt = q(x)
            rows = torch.cat([q(x[i:i + 1]) for i in range(len(x))])
            assert q(x[:-1]).shape == (len(x) - 1, 128)  # below prompt_rows: the kernel
        assert _rel(prompt, rows) < 2e-2, type(q).__name__
    assert calls == ["int8_dense", "int4_dense"]  # once each: the prompts, not the rows


def test_the_decode_step_compiles_in_one_graph_with_no_detection_in_forward(monkeypatch):
    """The prompt path is a plain attribute: after the layers are built, hardware detection
    (os.stat: a Dynamo graph break) never runs again, and the one-token forward of a tiny
    Llama with int8 attention and int4 MLP layers compiles with fullgraph and 0 breaks."""
    pytest.importorskip("transformers")
    from torch._dynamo.utils import counters

    from fastpipes import hardware
    from fastpipes.llama.pipeline import build_llama

    monkeypatch.setitem(P.FROM_ROWS, "int4", 64)  # a cheap prompt; read when built
    model = build_llama("tiny")
    for name, m in list(model.model.layers.named_modules()):
        if isinstance(m, torch.nn.Linear):
            parent, _, leaf = name.rpartition(".")
            q = (Int4WeightOnlyLinear.from_linear(m, 32) if "mlp" in name
                 else Int8WeightOnlyLinear.from_linear(m))
            setattr(model.model.layers.get_submodule(parent), leaf, q)

    def boom(*a, **k):
        raise AssertionError("hardware detection after the layers were built")
    monkeypatch.setattr(hardware, "detect", boom)
    monkeypatch.setattr(P, "prompt_plan", boom)
    dense = []
    real = P.int4_dense
    monkeypatch.setattr(P, "int4_dense", lambda *a: dense.append(a[0].shape[0]) or real(*a))
    torch._dynamo.reset()
    counters.clear()
    step = torch.compile(model, backend="eager", fullgraph=True)
    with torch.no_grad():
        out = step(torch.tensor([[5]]), use_cache=False).logits
        ref = model(torch.tensor([[5]]), use_cache=False).logits
        prompt = model(torch.tensor([list(range(3, 3 + 80))]), use_cache=False).logits  # dense
    assert sum(counters["graph_break"].values()) == 0
    assert counters["stats"]["unique_graphs"] == 1
    torch.testing.assert_close(out, ref)
    assert torch.isfinite(prompt).all() and dense and set(dense) == {80}  # only the prompt
    torch._dynamo.reset()


# trained_small (conftest.py) trains a small model once per session: ~5 s on a quiet
# 2-core machine (2 min under load 7)
@pytest.mark.parametrize("dtype,gs", [("int8", 128), ("int4", 32)])
def test_the_prompt_path_keeps_a_trained_model_within_its_class_bars(trained_small, dtype, gs,
                                                                      monkeypatch):
    """Teacher-forced on held-out text (every forward a prompt), the dense prompt path meets
    the class's top-1 and perplexity bars, as the packed kernel does, and stays as close to
    FP32 as the kernel does."""
    import fastpipes
    from fastpipes.llama.pipeline import LLAMA_BARS, build_llama
    from fastpipes.llama.reference import perplexity, teacher_forced, top1_agreement
    from fastpipes.recipe.schema import PrecisionClass

    path, batches = trained_small
    fp32 = teacher_forced(build_llama(str(path)), batches)
    monkeypatch.setitem(P.FROM_ROWS, dtype, 2)  # every window (chunk of 8 x 64 rows): dense
    got = {}
    for how in ("auto", "kernel"):
        model = build_llama(str(path))
        fastpipes.accelerate(model, {"family": "llama", "quantize": {
            "dtype": dtype, "group_size": gs, "prompt_path": how}})
        assert all(q.prompt_rows == (2 if how == "auto" else 0) for q in model.modules()
                   if hasattr(q, "prompt_rows"))
        out = teacher_forced(model, batches)
        got[how] = (top1_agreement(fp32, out),
                    100 * (perplexity(out, batches) / perplexity(fp32, batches) - 1))
    top1_bar, ppl_bar = LLAMA_BARS[PrecisionClass(dtype)]
    for how, (top1, ppl) in got.items():
        assert top1_bar.holds(top1) and ppl_bar.holds(ppl), (how, got)
    assert got["auto"][0] >= got["kernel"][0] - 0.01, got
    print(dtype, got)  # pytest -s: the numbers
