"""fuse_qkv: one Linear for q, k and v (k and v for cross-attention) in diffusers Attention.

Three [D, D] GEMMs on the same input become one [3D, D] GEMM: fewer, larger matmuls and
one read of the activations. Uses diffusers' own ``fuse_qkv_projections()`` when the
component has it (UNet2DConditionModel, AutoencoderKL, ...); for a plain submodule such
as ``vae_decoder`` it applies the same per-module fusion (``Attention.fuse_projections``
+ ``FusedAttnProcessor2_0``). Fused processors always use SDPA.

The fused weights are new tensors (concatenated copies); the original q/k/v Linear layers
stay in place, untouched, so accelerate()'s snapshot undoes the fusion by restoring each
module's ``__dict__`` (processor, ``to_qkv``/``to_kv`` entries, ``fused_projections``).

    fuse_qkv: {components: [unet, vae]}
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn as nn

from fastpipes.passes.base import PassContext, SkipPass, register_pass
from fastpipes.recipe.schema import Section


@dataclass(frozen=True)
class FuseQkvConfig(Section):
    components: list[str] = field(default_factory=list)  # [] = the adapter's default


def _attention_modules(module: nn.Module) -> list[nn.Module]:
    try:
        from diffusers.models.attention_processor import Attention
    except ImportError:
        return []
    return [m for m in module.modules() if isinstance(m, Attention)]


def _unfusable(attns: list[nn.Module]) -> str:
    """Why diffusers would refuse to fuse these modules, or ''."""
    added = sorted({type(m.processor).__name__ for m in attns
                    if "Added" in type(m.processor).__name__})
    return f"added-KV attention processors ({', '.join(added)})" if added else ""


def _fuse_modules(attns: list[nn.Module]) -> None:
    # what ModelMixin.fuse_qkv_projections does, for a component that is not a ModelMixin
    from diffusers.models.attention_processor import FusedAttnProcessor2_0

    for m in attns:
        m.fuse_projections(fuse=True)
        m.set_processor(FusedAttnProcessor2_0())


@register_pass("fuse_qkv", FuseQkvConfig, "fused q/k/v projections in diffusers attention")
def apply(ctx: PassContext, cfg: FuseQkvConfig) -> None:
    done = 0
    for name, module in ctx.components("fuse_qkv", cfg.components).items():
        attns = _attention_modules(module)
        if not attns:
            ctx.change(name, "no diffusers Attention modules: left as is")
            continue
        if all(getattr(m, "fused_projections", False) for m in attns):
            ctx.change(name, "already fused: left as is")
            continue
        why = _unfusable(attns)
        if why:
            ctx.change(name, f"not fused: {why}")
            continue
        if callable(getattr(module, "fuse_qkv_projections", None)):
            module.fuse_qkv_projections()  # diffusers' model-level API
            how = "fuse_qkv_projections()"
        else:
            _fuse_modules(attns)
            how = "Attention.fuse_projections()"
        n_self = sum(not m.is_cross_attention for m in attns)
        ctx.change(name, f"{how}: {n_self} self-attention q|k|v -> to_qkv, "
                         f"{len(attns) - n_self} cross-attention k|v -> to_kv, "
                         "processors -> FusedAttnProcessor2_0 (sdpa)")
        done += 1
    if not done:
        raise SkipPass("no component has fusable diffusers attention")
