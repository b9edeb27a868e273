"""Handler for kind "sam_relpos": segment-anything image-encoder ``Attention`` -> SDPA.

Each ``Attention`` module is swapped for :class:`SamSdpaAttention`, which shares the
original's ``qkv``/``proj`` layers and ``rel_pos_h``/``rel_pos_w`` parameters (state-dict
keys are unchanged) and computes attention with
:func:`fastpipes.kernels.sam_attention.sam_attention`. Each window-attention ``Block`` is
swapped for :class:`SamWindowBlock` (same submodules), which runs ``qkv`` and ``proj`` on
the image's tokens only: upstream pads the normalized tokens to whole windows first (64x64
-> 70x70 for 14-token windows, 20% more rows through both layers). The swaps replace
entries of the parents' module tables, which accelerate()'s snapshot restores on failure.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from fastpipes.kernels.packed_linear import PackedLinear
from fastpipes.kernels.sam_attention import attend, sam_attention
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

    def windowed(self, x: torch.Tensor, ws: int) -> torch.Tensor:
        """What upstream's window Block computes around this module: pad x [B, H, W, D] to
        whole ws x ws windows, attend within each, crop; but qkv / proj run on x's tokens
        only. A padding token is 0 after the norm, so its q/k/v are ``qkv`` of a zero token
        (the bias), which is what fills the windows' padding here."""
        B, H, W, D = x.shape
        t = self.qkv(x)  # [B, H, W, 3D]
        ph, pw = -H % ws, -W % ws
        if ph or pw:
            pad_token = self._pad_token(x, t.dtype)  # [1, 1, 1, 3D] or [3D]
            inside = torch.zeros(H + ph, W + pw, 1, dtype=torch.bool, device=x.device)
            inside[:H, :W] = True
            t = torch.where(inside, F.pad(t, (0, 0, 0, pw, 0, ph)), pad_token)
        Hp, Wp = H + ph, W + pw
        t = t.reshape(B, Hp // ws, ws, Wp // ws, ws, -1).transpose(2, 3).reshape(-1, ws, ws, t.shape[-1])
        rel_h = self.rel_pos_h if self.use_rel_pos else None
        rel_w = self.rel_pos_w if self.use_rel_pos else None
        out = attend(t, self.num_heads, self.scale, rel_h, rel_w, self.block_size, self.math,
                     self.sdpa, self.native)  # [B * windows, ws, ws, D]
        out = out.reshape(B, Hp // ws, Wp // ws, ws, ws, -1).transpose(2, 3).reshape(B, Hp, Wp, -1)
        return self.proj(out[:, :H, :W])

    def _pad_token(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """qkv of a zero token: a Linear's bias rounded to the output dtype (what its GEMM
        writes for a zero row, FP32 sums), else the layer called on one zero token."""
        bias = getattr(self.qkv, "bias", None)
        if type(self.qkv) in (nn.Linear, PackedLinear) and isinstance(bias, torch.Tensor):
            return bias.to(dtype)
        return self.qkv(x.new_zeros(1, 1, 1, x.shape[-1]))

    def extra_repr(self) -> str:
        if self.native:
            return f"heads={self.num_heads}, kernel=fastpipes relpos_attention (native)"
        return (f"heads={self.num_heads}, block_size={self.block_size}, math={self.math}, "
                f"sdpa={self.sdpa.__name__}")


class SamWindowBlock(nn.Module):
    """Drop-in for a segment_anything window-attention ``Block`` (same ``norm1`` / ``attn``
    / ``norm2`` / ``mlp``, same state-dict keys) whose attention skips the windows' padding
    in ``qkv`` and ``proj`` (:meth:`SamSdpaAttention.windowed`)."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.norm1, self.attn, self.norm2, self.mlp = block.norm1, block.attn, block.norm2, block.mlp
        self.window_size = block.window_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn.windowed(self.norm1(x), self.window_size)
        return x + self.mlp(self.norm2(x))


def _swap_window_blocks(component: nn.Module, names: list[str]) -> int:
    """Swap the window Blocks whose attn is at one of `names` (already SamSdpaAttention)."""
    swapped = 0
    for name in names:
        block_name = name.rpartition(".")[0]
        if not block_name:
            continue
        block = component.get_submodule(block_name)
        if not (type(block).__name__ == "Block" and getattr(block, "window_size", 0) > 0
                and all(hasattr(block, a) for a in ("norm1", "norm2", "mlp"))):
            continue
        parent_name, _, attr = block_name.rpartition(".")
        parent = component.get_submodule(parent_name) if parent_name else component
        setattr(parent, attr, SamWindowBlock(block))
        swapped += 1
    return swapped


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
    windows = _swap_window_blocks(component, [name for name, _ in site.modules])
    windows = (f"; {windows} window Blocks: qkv / proj on the image's tokens only, not on "
               "the windows' padding") if windows else ""
    if backend == "native":
        return (f"{swapped} rel-pos Attention -> fastpipes' native flash kernel "
                f"(AVX512-BF16, rel_h + rel_w added in the kernel, no mask; BF16){windows}")
    blocks = f"block_size={cfg.block_size}" if cfg.block_size else "whole mask at once"
    return (f"{swapped} rel-pos Attention -> SDPA ({backend}), rel_h + rel_w additive mask, "
            f"{blocks}{note}{windows}")
