"""SAM image-encoder attention as SDPA with the decomposed rel-pos bias as an additive mask.

segment-anything's ``Attention`` adds ``rel_h[q, kh] + rel_w[q, kw]`` to the (HW x HW)
attention logits. Here that sum is handed to ``scaled_dot_product_attention`` as its
``attn_mask``, built one block of query rows at a time, so for a global-attention block at
64x64 tokens the full FP32 bias (B*heads x 4096 x 4096, 805 MB for vit_b) never exists at
once: each block only needs ``block_size x 4096`` mask rows per head. Query rows are
independent (softmax runs over keys), so the blocks' outputs simply concatenate.

>>> q = k = v = torch.randn(1, 2, 16, 8)              # [B, heads, H*W, C]
>>> rel_h, rel_w = rel_pos_terms(q, torch.randn(7, 8), torch.randn(7, 8), (4, 4))
>>> sdpa_rel_pos(q, k, v, rel_h, rel_w, block_size=4).shape
torch.Size([1, 2, 16, 8])
"""
from __future__ import annotations

import contextlib
from typing import Callable

import torch
import torch.nn.functional as F

from fastpipes.kernels.relpos_flash import relpos_attention

# sdpa(q, k, v, attn_mask=None, scale=None) -> out, all [B, N, L, C]: F.scaled_dot_product_attention
# or another kernel with its calling convention (e.g. IPEX's flash attention)
Sdpa = Callable[..., torch.Tensor]


def get_rel_pos(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Relative-position embeddings for every (query, key) offset: [q_size, k_size, C].

    Same as segment_anything.modeling.image_encoder.get_rel_pos (kept here so the kernel
    needs only torch).
    """
    max_rel_dist = int(2 * max(q_size, k_size) - 1)
    if rel_pos.shape[0] != max_rel_dist:  # a checkpoint trained at another size
        resized = F.interpolate(rel_pos.reshape(1, rel_pos.shape[0], -1).permute(0, 2, 1),
                                size=max_rel_dist, mode="linear")
        rel_pos = resized.reshape(-1, max_rel_dist).permute(1, 0)
    q_coords = torch.arange(q_size, device=rel_pos.device)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size, device=rel_pos.device)[None, :] * max(q_size / k_size, 1.0)
    relative = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return rel_pos[relative.long()]


def rel_pos_terms(q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor,
                  hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The two decomposed bias terms from the (unscaled) queries.

    q: [B, heads, H*W, C] -> rel_h: [B, heads, H*W, H], rel_w: [B, heads, H*W, W]
    """
    H, W = hw
    B, N, L, C = q.shape
    Rh = get_rel_pos(H, H, rel_pos_h).to(q.dtype)  # [H, H, C]
    Rw = get_rel_pos(W, W, rel_pos_w).to(q.dtype)  # [W, W, C]
    r_q = q.reshape(B * N, H, W, C)
    rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, Rh)  # [B*N, H, W, H]
    rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, Rw)  # [B*N, H, W, W]
    return rel_h.reshape(B, N, L, H), rel_w.reshape(B, N, L, W)


def rel_pos_mask(rel_h: torch.Tensor, rel_w: torch.Tensor) -> torch.Tensor:
    """Additive mask for the query rows given: [B, N, rows, H] + [B, N, rows, W] -> [B, N, rows, H*W]."""
    B, N, rows, H = rel_h.shape
    W = rel_w.shape[-1]
    return (rel_h[..., :, None] + rel_w[..., None, :]).reshape(B, N, rows, H * W)


def _math_only():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.MATH])


def sdpa_rel_pos(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rel_h: torch.Tensor,
                 rel_w: torch.Tensor, block_size: int = 256, scale: float | None = None,
                 math: bool = False, sdpa: Sdpa = F.scaled_dot_product_attention) -> torch.Tensor:
    """softmax(q k^T * scale + rel_h + rel_w) v, the mask built `block_size` query rows at a time.

    q, k, v: [B, N, L, C]; rel_h: [B, N, L, H]; rel_w: [B, N, L, W] with L = H*W.
    ``block_size=0`` builds the whole [B, N, L, L] mask at once (fine for 14x14 windows).
    ``math=True`` restricts SDPA to PyTorch's reference math kernel; `sdpa` replaces
    PyTorch's SDPA by another kernel with its calling convention.
    """
    L = q.shape[2]
    ctx = _math_only() if math else contextlib.nullcontext()
    with ctx:
        if block_size <= 0 or block_size >= L:
            mask = rel_pos_mask(rel_h, rel_w)  # [B, N, L, L]
            return sdpa(q, k, v, attn_mask=mask, scale=scale)
        outs = []
        for s in range(0, L, block_size):
            e = min(s + block_size, L)
            mask = rel_pos_mask(rel_h[:, :, s:e], rel_w[:, :, s:e])  # [B, N, e-s, L]
            outs.append(sdpa(q[:, :, s:e], k, v, attn_mask=mask, scale=scale))
        return torch.cat(outs, dim=2)  # [B, N, L, C]


def sam_attention(x: torch.Tensor, qkv: torch.nn.Module, proj: torch.nn.Module, num_heads: int,
                  scale: float, rel_pos_h: torch.Tensor | None, rel_pos_w: torch.Tensor | None,
                  block_size: int = 256, math: bool = False,
                  sdpa: Sdpa = F.scaled_dot_product_attention,
                  native: bool = False) -> torch.Tensor:
    """segment-anything ``Attention.forward`` with SDPA (or `sdpa`, or with `native` the
    kernel of :mod:`fastpipes.kernels.relpos_flash`). x: [B, H, W, D] -> [B, H, W, D]."""
    return proj(attend(qkv(x), num_heads, scale, rel_pos_h, rel_pos_w, block_size, math, sdpa,
                       native))


def attend(t: torch.Tensor, num_heads: int, scale: float, rel_pos_h: torch.Tensor | None,
           rel_pos_w: torch.Tensor | None, block_size: int = 256, math: bool = False,
           sdpa: Sdpa = F.scaled_dot_product_attention, native: bool = False) -> torch.Tensor:
    """The attention between ``qkv`` and ``proj``: t [B, H, W, 3 * D] (q, k, v by channel,
    as segment-anything's qkv layer writes them) -> [B, H, W, D], heads concatenated."""
    B, H, W, _ = t.shape
    L = H * W
    t = t.reshape(B, L, 3, num_heads, -1).permute(2, 0, 3, 1, 4)  # [3, B, N, L, C]
    q, k, v = t.unbind(0)
    rel_h = rel_w = None
    if rel_pos_h is not None:
        rel_h, rel_w = rel_pos_terms(q, rel_pos_h, rel_pos_w, (H, W))
    if native:  # [B, L, N, C] in BF16
        return relpos_attention(q, k, v, rel_h, rel_w, scale, W).to(q.dtype).reshape(B, H, W, -1)
    if rel_h is None:
        ctx = _math_only() if math else contextlib.nullcontext()
        with ctx:
            out = sdpa(q, k, v, scale=scale)
    else:
        out = sdpa_rel_pos(q, k, v, rel_h, rel_w, block_size, scale=scale, math=math, sdpa=sdpa)
    return out.transpose(1, 2).reshape(B, H, W, -1)  # [B, N, L, C] -> [B, H, W, N*C]
