"""Prompt (prefill) GEMMs for the weight-only quantized layers: many rows at once.

The packed WOQ kernels (kernels/woq.py) are GEMV kernels: they work a few rows at a time and
re-read the weight for each, so a 512-token prompt runs at or below FP32 speed. From a few
rows on, a GEMM the hardware accelerates does better, and which one depends on the CPU
tier (:func:`plan`, measured on avx512-bf16, docs/llama.md "first token"):

- int8 weights: ``int_mm``: the activations are quantized per row at run time (as
  :class:`~fastpipes.kernels.woq.Int8DynamicLinear` does) and multiplied by the int8 weight
  as it is stored (``aten._int_mm``, VNNI / AMX int8: no copy of the weight at all).
- int4 weights: ``bf16_blocks``: the weight is dequantized into BF16 ``BLOCK_ROWS`` output
  channels at a time (never the whole layer: the 128256 x 2048 lm_head would be 525 MB) and
  each block runs the BF16 GEMM (AVX512-BF16 / AMX). The packed layout is read directly
  (:func:`unpack_int4_t`); :func:`int4_layout_ok` checks it once per process against the
  kernel's own packing, so a PyTorch that packs differently falls back to the kernel.
- ``kernel``: the packed kernel, as for one row (tiers without a fast GEMM of that kind).
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from fastpipes.hardware import detect

# the AVX-512 int4 packing: output channels in blocks of 64; a block's byte (k, j) holds
# channel j (low nibble) and 32 + j (high nibble); a tail block of n < 64 channels holds
# channels 2j and 2j + 1 in byte (k, j)
INT4_BLOCK_N = 64
BLOCK_ROWS = 2048  # output channels dequantized at a time (a multiple of INT4_BLOCK_N)
# from how many rows each path replaces the packed kernel (measured on avx512-bf16: int_mm
# wins from 2 rows on; the int4 dequantization pays from about 64)
FROM_ROWS = {"int_mm": 2, "dense": 32, "bf16_blocks": 64}
INT8_PREFILL_ROWS = FROM_ROWS["int_mm"]
INT4_PREFILL_ROWS = FROM_ROWS["bf16_blocks"]

# tier -> (int8 path, int4 path); other tiers: int8 converts its weight to the activation
# dtype for the dense GEMM (the path before int_mm), int4 keeps the packed kernel
# Empty for now: both new paths change numerics beyond weight-only (int_mm quantizes the
# activations to int8, bf16_blocks rounds FP32 activations to BF16), and neither their first-token
# gain nor their fidelity on the trained reference model has been measured on a quiet machine
# (issue 25). Until they are, every tier keeps the paths before them; the candidates are
# {"amx": ("int_mm", "bf16_blocks"), "avx512-bf16": ("int_mm", "bf16_blocks")}.
_PLANS: dict[str, tuple[str, str]] = {}
_DEFAULT_PLAN = ("dense", "kernel")


@functools.lru_cache(maxsize=None)
def plan() -> tuple[str, str]:
    """(int8 path, int4 path) for prompts on this machine, from its CPU tier.

    Called from layers' forward: with no tier plans there is nothing to detect, and Dynamo
    cannot trace hardware detection (os.stat), so a compiled decode would break. Whoever
    fills _PLANS must resolve the plan when the layer is built, not here."""
    if not _PLANS:
        return _DEFAULT_PLAN
    int8, int4 = _PLANS.get(detect().tier, _DEFAULT_PLAN)
    return int8, (int4 if int4_layout_ok() else "kernel")


def _path(name: str, rows: int) -> str:
    return name if name != "kernel" and rows >= FROM_ROWS[name] else "kernel"


def int8_path(rows: int) -> str:
    """How an int8 weight-only layer multiplies `rows` rows: int_mm | dense | kernel."""
    return _path(plan()[0], rows)


def int4_path(rows: int) -> str:
    """How an int4 weight-only layer multiplies `rows` rows: bf16_blocks | kernel."""
    return _path(plan()[1], rows)


def int8_int_mm(x2: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """x2 [M, K] float, weight [N, k_padded] int8 (zero columns past K), scales [N] ->
    [M, N] FP32: per-row int8 activations x the int8 weight, int32 accumulation."""
    x2 = x2.float()
    x_scale = (x2.abs().amax(dim=1, keepdim=True) / 127.0).clamp(min=1e-8)  # [M, 1]
    x_int8 = torch.round(x2 / x_scale).clamp_(-127, 127).to(torch.int8)
    x_int8 = F.pad(x_int8, (0, weight.shape[1] - x_int8.shape[1]))
    acc = torch._int_mm(x_int8, weight.t())  # [M, N] int32
    return acc.float().mul_(x_scale).mul_(scales.float())


def unpack_int4_t(packed: torch.Tensor, k: int) -> torch.Tensor:
    """The 4-bit values (0..15) of packed rows [R, k/2] (R from a 64-aligned start), as
    [k, R] uint8: the weight transposed, which the GEMM reads as well as [R, k]."""
    r = packed.shape[0]
    full = r // INT4_BLOCK_N * INT4_BLOCK_N
    out = torch.empty(k, r, dtype=torch.uint8)
    if full:
        p = packed[:full].reshape(full // INT4_BLOCK_N, k, 32).transpose(0, 1)  # [k, nb, 32]
        o = out[:, :full].view(k, full // INT4_BLOCK_N, 2, 32)
        torch.bitwise_and(p, 15, out=o[:, :, 0])
        torch.bitwise_right_shift(p, 4, out=o[:, :, 1])
    if r > full:  # tail block: channels 2j (low nibble) and 2j + 1 (high) in byte j
        p = packed[full:].reshape(k, (r - full) // 2)
        o = out[:, full:].view(k, (r - full) // 2, 2)
        torch.bitwise_and(p, 15, out=o[:, :, 0])
        torch.bitwise_right_shift(p, 4, out=o[:, :, 1])
    return out


def dequantize_int4_t(packed: torch.Tensor, scales_and_zeros: torch.Tensor, k: int,
                      group_size: int) -> torch.Tensor:
    """[k, R] BF16 weight (transposed) of packed rows [R, k/2] with their
    scales_and_zeros [k / group_size, R, 2]: (q - 8) * scale + zero, as the kernel computes.

    Full 64-channel blocks are dequantized in the packing's own order ([blocks, k, 64]: two
    contiguous halves per byte row, no strided writes), then laid out as [k, R] in one copy.
    """
    r = packed.shape[0]
    full = r // INT4_BLOCK_N * INT4_BLOCK_N
    if full != r:  # a tail block (out_features % 64): the plain unpacking
        return _scale_t(unpack_int4_t(packed, k).to(torch.bfloat16), scales_and_zeros, group_size)
    nb, g = r // INT4_BLOCK_N, k // group_size
    p = packed.view(nb, k, 32)
    u = torch.cat([p & 15, p >> 4], dim=-1).to(torch.bfloat16)  # [nb, k, 64]
    sz = scales_and_zeros.float().view(g, nb, 1, INT4_BLOCK_N, 2).transpose(0, 1)
    scale = sz[..., 0].to(torch.bfloat16).contiguous()  # [nb, G, 1, 64]
    offset = (sz[..., 1] - 8.0 * sz[..., 0]).to(torch.bfloat16).contiguous()
    u.view(nb, g, group_size, INT4_BLOCK_N).mul_(scale).add_(offset)
    return u.transpose(0, 1).reshape(k, r)


def _scale_t(u: torch.Tensor, scales_and_zeros: torch.Tensor, group_size: int) -> torch.Tensor:
    sz = scales_and_zeros.float()
    scale = sz[..., 0].unsqueeze(1)  # [G, 1, R]
    offset = (sz[..., 1] - 8.0 * sz[..., 0]).unsqueeze(1)
    u.view(u.shape[0] // group_size, group_size, -1).mul_(scale.to(u.dtype)).add_(
        offset.to(u.dtype))
    return u


def int4_bf16_blocks(x2: torch.Tensor, packed: torch.Tensor, scales_and_zeros: torch.Tensor,
                     k_padded: int, group_size: int) -> torch.Tensor:
    """x2 [M, K] -> [M, N] BF16, dequantizing BLOCK_ROWS output channels at a time."""
    xb = F.pad(x2.to(torch.bfloat16), (0, k_padded - x2.shape[1]))
    n = packed.shape[0]
    out = torch.empty(x2.shape[0], n, dtype=torch.bfloat16)
    for s in range(0, n, BLOCK_ROWS):
        e = min(n, s + BLOCK_ROWS)
        w_t = dequantize_int4_t(packed[s:e], scales_and_zeros[:, s:e], k_padded, group_size)
        out[:, s:e] = torch.mm(xb, w_t)
    return out


@functools.lru_cache(maxsize=None)
def int4_layout_ok() -> bool:
    """Whether :func:`unpack_int4_t` reads what this PyTorch's int4 packing writes (a full
    block and a tail block, values covering 0..15)."""
    n, k = INT4_BLOCK_N + 16, 64
    w = (torch.arange(n * k, dtype=torch.int32).reshape(n, k) * 7 + 3) % 16
    try:
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(w, 1)
        return packed.shape == (n, k // 2) and torch.equal(
            unpack_int4_t(packed, k).t().to(torch.int32), w)
    except (RuntimeError, NotImplementedError):
        return False


__all__ = ["plan", "int8_path", "int4_path", "int8_int_mm", "int4_bf16_blocks",
           "unpack_int4_t", "dequantize_int4_t", "int4_layout_ok", "INT8_PREFILL_ROWS",
           "INT4_PREFILL_ROWS", "BLOCK_ROWS", "FROM_ROWS"]
