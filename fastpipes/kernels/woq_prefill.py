"""Prompt (prefill) GEMMs for the weight-only quantized layers: many rows at once.

The packed WOQ kernels (kernels/woq.py) are GEMV kernels: they work a few rows at a time and
re-read the weight for each, so a 512-token prompt runs at or below FP32 speed. From
``rows`` rows on, a layer instead dequantizes its weight, ``BLOCK_ROWS`` output channels at a
time (never the whole layer: the 128256 x 2048 lm_head would be 525 MB in BF16), into the
dtype of a dense GEMM the hardware runs fast, and runs that GEMM (``dense``):

- the GEMM dtype is the layer's activation dtype where the CPU has native BF16 (AMX,
  AVX512-BF16): a BF16-activation layer stays in its class (its packed kernel rounds the
  activations to BF16 too), and an FP32-activation one gets an FP32 GEMM;
- FP32 on CPUs without native BF16 (AVX2: BF16 GEMMs are 100-500x slower there), which is
  closer to FP32 than the BF16 kernel, never further.

No path quantizes the activations: that is W8A8 (:class:`~fastpipes.kernels.woq.Int8DynamicLinear`,
``mode: dynamic``), another precision class. :func:`prompt_plan` decides once, when a layer is
built; its forward only compares the row count with the stored ``prompt_rows`` (no hardware
detection in forward: a compiled decode step traces it without a graph break).

int4's packed layout is read directly (:func:`unpack_int4_t`); :func:`int4_layout_ok` checks
it once per process against the kernel's own packing, so a PyTorch that packs differently
keeps the kernel.
"""
from __future__ import annotations

import functools

import torch

from fastpipes.hardware import detect

# the AVX-512 int4 packing: output channels in blocks of 64; a block's byte (k, j) holds
# channel j (low nibble) and 32 + j (high nibble); a tail block of n < 64 channels holds
# channels 2j and 2j + 1 in byte (k, j)
INT4_BLOCK_N = 64
BLOCK_ROWS = 2048  # output channels dequantized at a time (a multiple of INT4_BLOCK_N)
# from how many rows the dense GEMM replaces the packed kernel, per weight kind: where it
# overtook the kernel on one Llama-3.2-1B decoder layer's shapes (benchmarks/woq_prefill_probe.py,
# avx512-bf16, quiet machine, 2026-12-05; docs/llama.md "first token"): int8 ties at 32 rows
# and wins from 64 (its cost: one int8 -> BF16 copy), int4 wins between 128 and 256 (it
# dequantizes 4-bit groups in eager ops, several passes over the weight)
FROM_ROWS = {"int8": 32, "int4": 256}
NEVER = 0  # prompt_rows of a layer that always runs its packed kernel


def prompt_plan(kind: str, act_dtype: torch.dtype, bf16_native: bool | None = None
                ) -> tuple[int, torch.dtype]:
    """(prompt_rows, GEMM dtype) of a weight-only layer of `kind` ("int8" | "int4") with
    `act_dtype` activations: from prompt_rows rows on it runs the dense GEMM in that dtype
    (:data:`NEVER`: always the packed kernel). `bf16_native` defaults to this machine's."""
    if bf16_native is None:
        bf16_native = detect().bf16_native
    if kind == "int4" and not int4_layout_ok():
        return NEVER, act_dtype
    dtype = act_dtype if bf16_native else torch.float32
    return FROM_ROWS[kind], dtype


def int8_dense(x2: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor, k: int,
               dtype: torch.dtype) -> torch.Tensor:
    """x2 [M, K] float, weight [N, k_padded] int8, scales [N] -> [M, N] FP32:
    (x . w_int8) * scale, as the int8 kernel computes, on the dense `dtype` GEMM."""
    xd = x2[:, :k].to(dtype)
    n = weight.shape[0]
    out = torch.empty(x2.shape[0], n, dtype=torch.float32)
    block = torch.empty(min(n, BLOCK_ROWS), k, dtype=dtype)  # reused: no page faults per block
    for s in range(0, n, BLOCK_ROWS):
        e = min(n, s + BLOCK_ROWS)
        w = block[:e - s]
        w.copy_(weight[s:e, :k])  # int8 -> dtype, exact (|q| <= 128)
        out[:, s:e] = torch.mm(xd, w.t())
    return out.mul_(scales.float())


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
                      group_size: int, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """[k, R] weight (transposed) in `dtype` of packed rows [R, k/2] with their
    scales_and_zeros [k / group_size, R, 2]: (q - 8) * scale + zero, as the kernel computes
    (for tests and checks; :func:`int4_dense` leaves the offset to the activations)."""
    scale, offset = _scale_offset(scales_and_zeros)
    u = unpack_int4_t(packed, k).view(k // group_size, group_size, -1)  # [G, gs, R]
    w = torch.mul(u, scale.to(dtype).unsqueeze(1))
    return w.add_(offset.to(dtype).unsqueeze(1)).view(k, -1)


def _scale_offset(scales_and_zeros: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[G, R] scale and offset (zero - 8 * scale, the weight of q = 0) in FP32."""
    sz = scales_and_zeros.float()
    return sz[..., 0], sz[..., 1] - 8.0 * sz[..., 0]


def int4_dense(x2: torch.Tensor, packed: torch.Tensor, scales_and_zeros: torch.Tensor,
               k_padded: int, group_size: int, dtype: torch.dtype) -> torch.Tensor:
    """x2 [M, K] -> [M, N] FP32 on the dense `dtype` GEMM, dequantizing BLOCK_ROWS output
    channels at a time.

    w[n, k] = q * scale[g, n] + offset[g, n] (g = k // group_size): the GEMM gets only
    q * scale (one pass over the block), and the offsets are added as
    x's per-group sums [M, G] @ offset [G, N], a GEMM G / K the size of the big one."""
    m, n, g = x2.shape[0], packed.shape[0], k_padded // group_size
    xd = torch.nn.functional.pad(x2.to(dtype), (0, k_padded - x2.shape[1]))  # [M, k_padded]
    scale, offset = _scale_offset(scales_and_zeros)  # [G, N] each
    out = xd.float().view(m, g, group_size).sum(-1) @ offset  # [M, N]
    scale = scale.to(dtype).unsqueeze(1)  # [G, 1, N]
    for s in range(0, n, BLOCK_ROWS):
        e = min(n, s + BLOCK_ROWS)
        u = unpack_int4_t(packed[s:e], k_padded).view(g, group_size, e - s)
        out[:, s:e] += torch.mm(xd, torch.mul(u, scale[..., s:e]).view(k_padded, e - s))
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


__all__ = ["prompt_plan", "int8_dense", "int4_dense", "unpack_int4_t", "dequantize_int4_t",
           "int4_layout_ok", "BLOCK_ROWS", "FROM_ROWS", "NEVER"]
