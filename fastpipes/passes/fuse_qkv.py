"""fuse_qkv: one Linear for q, k and v (k and v for cross-attention) in diffusers Attention.

Three [D, D] GEMMs on the same input become one [3D, D] GEMM: fewer, larger matmuls and
one read of the activations. Uses diffusers' own ``fuse_qkv_projections()`` when the
component has it (UNet2DConditionModel, AutoencoderKL, ...); for a plain submodule such
as ``vae_decoder`` it applies the same per-module fusion (``Attention.fuse_projections``
+ ``FusedAttnProcessor2_0``). Fused processors always use SDPA.

The fused weights are new tensors (concatenated copies). diffusers keeps the original
q/k/v Linear layers beside them, unread by the fused processors (2,472 MiB of FP32 weights
in the full SDXL UNet, which a later cast or quantize pass would convert too), so this pass
drops them; ``unfuse_qkv_projections()`` on the component (diffusers' own API) first splits
the fused weights back into q/k/v layers, then restores the original processors. A failed
accelerate() restores each module's ``__dict__`` (processor, projection entries,
``fused_projections``) from its snapshot, which also holds the dropped layers until then.

    fuse_qkv: {components: [unet, vae]}
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from fastpipes.errors import InputError
from fastpipes.passes.base import PassContext, SkipPass, register_pass
from fastpipes.recipe.schema import Section

SPLIT = "_fastpipes_unfused_sizes"  # on a fused Attention: {projection: out_features}


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


def _unread(m: nn.Module) -> tuple[str, ...]:
    """The projections a fused Attention no longer reads: q, k, v (self-attention) or k, v
    (cross-attention: the fused processor still reads to_q)."""
    return ("to_k", "to_v") if m.is_cross_attention else ("to_q", "to_k", "to_v")


def _drop_unfused(attns: list[nn.Module]) -> int:
    """Drop the projections the fused processors never read; returns the bytes freed."""
    freed = 0
    for m in attns:
        sizes = {}
        for name in _unread(m):
            lin = getattr(m, name)
            sizes[name] = lin.out_features
            freed += sum(p.numel() * p.element_size() for p in lin.parameters())
            setattr(m, name, None)
        m.__dict__[SPLIT] = sizes
    return freed


@torch.no_grad()
def _split_back(m: nn.Module) -> None:
    """Rebuild the q/k/v projections of a fused Attention from its fused weights."""
    sizes = m.__dict__.pop(SPLIT)
    fused = m.to_kv if m.is_cross_attention else m.to_qkv
    if type(fused) is not nn.Linear:
        m.__dict__[SPLIT] = sizes
        raise InputError(f"cannot unfuse q/k/v projections: the fused layer is now a "
                         f"{type(fused).__name__} (changed after fusion, e.g. quantized); "
                         "accelerate a fresh pipeline instead")
    start = 0
    for name, size in sizes.items():
        w = fused.weight[start:start + size]
        lin = nn.Linear(w.shape[1], size, bias=fused.bias is not None, device=w.device,
                        dtype=w.dtype)
        lin.weight.copy_(w)
        if fused.bias is not None:
            lin.bias.copy_(fused.bias[start:start + size])
        setattr(m, name, lin)
        start += size


def _unfuse_first(module: nn.Module, attns: list[nn.Module]) -> None:
    """Make the component's own unfuse_qkv_projections() rebuild the dropped projections."""
    original = module.unfuse_qkv_projections

    def unfuse_qkv_projections(*args, **kwargs):
        for m in attns:
            if SPLIT in m.__dict__:
                _split_back(m)
        return original(*args, **kwargs)

    module.unfuse_qkv_projections = unfuse_qkv_projections  # an instance attribute: snapshotted


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
        model_api = callable(getattr(module, "fuse_qkv_projections", None))
        if model_api:
            module.fuse_qkv_projections()  # diffusers' model-level API
            how = "fuse_qkv_projections()"
        else:
            _fuse_modules(attns)
            how = "Attention.fuse_projections()"
        freed = _drop_unfused(attns)
        if model_api and callable(getattr(module, "unfuse_qkv_projections", None)):
            _unfuse_first(module, attns)
        n_self = sum(not m.is_cross_attention for m in attns)
        ctx.change(name, f"{how}: {n_self} self-attention q|k|v -> to_qkv, "
                         f"{len(attns) - n_self} cross-attention k|v -> to_kv, "
                         "processors -> FusedAttnProcessor2_0 (sdpa); the unfused projections "
                         f"dropped ({freed / 2**20:.1f} MiB)")
        done += 1
    if not done:
        raise SkipPass("no component has fusable diffusers attention")
