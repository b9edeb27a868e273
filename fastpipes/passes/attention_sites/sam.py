"""Handler for kind "sam_relpos": segment-anything image-encoder ``Attention`` -> SDPA.

Each ``Attention`` module is swapped for :class:`SamSdpaAttention`, which shares the
original's ``qkv``/``proj`` layers and ``rel_pos_h``/``rel_pos_w`` parameters (state-dict
keys are unchanged) and computes attention with
:func:`fastpipes.kernels.sam_attention.sam_attention`. The swap replaces entries of the
parent's module table, which accelerate()'s snapshot restores on failure.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from fastpipes.kernels.sam_attention import sam_attention
from fastpipes.passes.attention_sites import SITE_HANDLERS


def ipex_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask=None, scale=None):
    """IPEX's CPU flash-attention kernel (the one ipex.llm's attention calls) with SDPA's
    calling convention; q, k, v: [B, N, L, C] -> [B, N, L, C]. Needs IPEX imported."""
    return torch.ops.torch_ipex.flash_attention(q, k, v, attention_mask=attn_mask, scale=scale)[0]


class SamSdpaAttention(nn.Module):
    """Drop-in for segment_anything ``Attention``: x [B, H, W, D] -> [B, H, W, D]."""

    def __init__(self, orig: nn.Module, block_size: int, math: bool = False, sdpa=None,
                 native: bool = False):
        super().__init__()
        self.num_heads = orig.num_heads
        self.scale = orig.scale
        self.use_rel_pos = orig.use_rel_pos
        self.qkv, self.proj = orig.qkv, orig.proj
        if self.use_rel_pos:
            self.rel_pos_h, self.rel_pos_w = orig.rel_pos_h, orig.rel_pos_w
        self.block_size = block_size
        self.math = math
        self.sdpa = sdpa or F.scaled_dot_product_attention
        self.native = native

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rel_h = self.rel_pos_h if self.use_rel_pos else None
        rel_w = self.rel_pos_w if self.use_rel_pos else None
        return sam_attention(x, self.qkv, self.proj, self.num_heads, self.scale, rel_h, rel_w,
                             self.block_size, self.math, self.sdpa, self.native)

    def extra_repr(self) -> str:
        if self.native:
            return f"heads={self.num_heads}, kernel=fastpipes relpos_attention (native)"
        return (f"heads={self.num_heads}, block_size={self.block_size}, math={self.math}, "
                f"sdpa={self.sdpa.__name__}")


@SITE_HANDLERS.register("sam_relpos")
def handle(ctx, site, cfg) -> str:
    backend = getattr(cfg.backend, "value", cfg.backend)
    note, sdpa = "", None
    if backend == "ipex":  # the preflight made sure IPEX imports
        # importing IPEX leaves F.scaled_dot_product_attention on PyTorch's kernel: call its own
        sdpa, note = ipex_sdpa, " through torch.ops.torch_ipex.flash_attention"
    component = ctx.adapter.components()[site.component]
    swapped = 0
    for name, module in site.modules:
        parent_name, _, attr = name.rpartition(".")
        parent = component.get_submodule(parent_name) if parent_name else component
        assert getattr(parent, attr) is module, f"site {name} is stale"
        setattr(parent, attr, SamSdpaAttention(module, cfg.block_size, math=backend == "math",
                                               sdpa=sdpa, native=backend == "native"))
        swapped += 1
    if backend == "native":
        return (f"{swapped} rel-pos Attention -> fastpipes' native flash kernel "
                "(AVX512-BF16, rel_h + rel_w added in the kernel, no mask; BF16)")
    blocks = f"block_size={cfg.block_size}" if cfg.block_size else "whole mask at once"
    return (f"{swapped} rel-pos Attention -> SDPA ({backend}), rel_h + rel_w additive mask, "
            f"{blocks}{note}")
