"""SAM's rel-pos attention in one native kernel (kernels/csrc/relpos_attention.cpp).

PyTorch's CPU flash kernel runs a global SAM block's attention at about a third of the BF16
GEMM rate on CPUs without AMX, and needs the rel-pos bias as a mask built block by block
(benchmarks/RESULTS.md [O6]). This kernel adds ``rel_h[q, j // W] + rel_w[q, j % W]`` to
each score inside its tiles (no mask tensor) and runs both products with AVX512-BF16
``vdpbf16ps`` on packed K / V: see the C++ file for the blocking.

It computes in BF16 (FP32 accumulation and softmax): q, k, v of another dtype are cast.
``torch.ops.fastpipes.relpos_attention`` is a custom op, so ``torch.compile`` keeps it as
one opaque call (its shape comes from a fake implementation).

>>> q = k = v = torch.randn(1, 2, 16, 16, dtype=torch.bfloat16)   # [B, heads, H*W, C]
>>> rel_h, rel_w = torch.zeros(1, 2, 16, 4), torch.zeros(1, 2, 16, 4)
>>> relpos_attention(q, k, v, rel_h, rel_w, 0.25, 4).shape  # doctest: +SKIP
torch.Size([1, 16, 2, 16])
"""
from __future__ import annotations

import ctypes
import functools

import torch

from fastpipes.kernels.native import NativeUnavailable, library

MAX_HEAD_DIM = 128  # the fast path's limit (8 vectors of 16 channels)


@functools.lru_cache(maxsize=None)
def _lib() -> ctypes.CDLL:
    lib = library("relpos_attention")
    lib.fp_relpos_attention.restype = ctypes.c_int
    lib.fp_relpos_attention.argtypes = [ctypes.c_void_p] * 6 + [
        ctypes.POINTER(ctypes.c_int64), ctypes.POINTER(ctypes.c_int64), ctypes.c_float,
        ctypes.c_int, ctypes.c_int]
    lib.fp_relpos_fast_available.restype = ctypes.c_int
    return lib


def fast_available() -> bool:
    """Whether this CPU runs the kernel's AVX512-BF16 path (NativeUnavailable when the
    kernel cannot be built here at all)."""
    return bool(_lib().fp_relpos_fast_available())


def why_unavailable() -> str | None:
    """None when the fast kernel runs here, else why not (for preflight messages)."""
    try:
        if not fast_available():
            return ("this CPU lacks AVX512-BF16 (the kernel's vdpbf16ps products); its "
                    "portable path is for checks only")
    except NativeUnavailable as e:
        return str(e)
    return None


def _run(q, k, v, rel_h, rel_w, scale: float, w: int, portable: bool) -> torch.Tensor:
    B, N, L, C = q.shape
    if C > MAX_HEAD_DIM:
        raise ValueError(f"relpos_attention supports head dims up to {MAX_HEAD_DIM}, got {C}")
    if L % w:
        raise ValueError(f"relpos_attention: {L} tokens are not a grid {w} wide")
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in
               (x.to(torch.bfloat16) for x in (q, k, v)))
    out = torch.empty(B, L, N, C, dtype=torch.bfloat16, device=q.device)  # [B, L, N, C]
    ptr = 0
    if rel_h is not None:
        rel_h = rel_h.to(torch.float32).contiguous()
        rel_w = rel_w.to(torch.float32).contiguous()
        ptr = 1
    shape = (ctypes.c_int64 * 6)(B, N, L, C, L // w, w)
    o_strides = out.stride()
    strides = (ctypes.c_int64 * 12)(
        *q.stride()[:3], *k.stride()[:3], *v.stride()[:3],
        o_strides[0], o_strides[2], o_strides[1])  # out viewed as [B, N, L, C]
    rc = _lib().fp_relpos_attention(
        q.data_ptr(), k.data_ptr(), v.data_ptr(),
        rel_h.data_ptr() if ptr else None, rel_w.data_ptr() if ptr else None, out.data_ptr(),
        shape, strides, float(scale), torch.get_num_threads(), int(portable))
    if rc == 2:
        raise NativeUnavailable("relpos_attention: this CPU lacks AVX512-BF16 (only the "
                                "portable path was built)")
    if rc:
        raise RuntimeError(f"relpos_attention failed (code {rc})")
    return out


@torch.library.custom_op("fastpipes::relpos_attention", mutates_args=())
def _op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rel_h: torch.Tensor | None,
        rel_w: torch.Tensor | None, scale: float, w: int, portable: bool) -> torch.Tensor:
    return _run(q, k, v, rel_h, rel_w, scale, w, portable)


@_op.register_fake
def _(q, k, v, rel_h, rel_w, scale, w, portable):
    B, N, L, C = q.shape
    return q.new_empty(B, L, N, C, dtype=torch.bfloat16)


def relpos_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     rel_h: torch.Tensor | None, rel_w: torch.Tensor | None, scale: float,
                     w: int, portable: bool = False) -> torch.Tensor:
    """softmax(q k^T * scale + rel_h[.., j // w] + rel_w[.., j % w]) v in BF16.

    q, k, v: [B, N, L, C] (heads second; any strides with C contiguous); rel_h: [B, N, L,
    L // w], rel_w: [B, N, L, w], or both None (no bias). Returns [B, L, N, C] BF16 (tokens
    second: ``.reshape(B, H, W, N * C)`` is free). `portable` runs the scalar path (checks).
    """
    return _op(q, k, v, rel_h, rel_w, scale, w, portable)


__all__ = ["relpos_attention", "fast_available", "why_unavailable", "MAX_HEAD_DIM"]
