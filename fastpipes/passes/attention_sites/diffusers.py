"""Attention sites of kind "diffusers": diffusers ``Attention`` modules and their processors.

diffusers keeps the attention math in a swappable processor object per module; switching
backend is ``module.set_processor(...)`` (what ``model.set_attn_processor`` does). Only
the plain self/cross-attention processors are swapped; modules using anything else
(added-KV, fused, joint attention of transformer models, IP-adapter) keep theirs and
are counted in the description. accelerate()'s snapshot restores the ``processor``
attribute of each module.
"""
from __future__ import annotations

from fastpipes.passes.attention_sites import SITE_HANDLERS

PLAIN = ("AttnProcessor", "AttnProcessor2_0")  # classes we may replace


def _processor(backend: str):
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    if backend == "sdpa":
        return AttnProcessor2_0()  # F.scaled_dot_product_attention (fused CPU flash kernel)
    assert backend == "math", f"the preflight refuses backend {backend!r} for diffusers sites"
    return AttnProcessor()  # baddbmm + softmax + bmm: the eager reference


@SITE_HANDLERS.register("diffusers")
def handle(ctx, site, cfg) -> str:
    """Set `cfg.backend`'s processor on every plain Attention module of `site`."""
    backend = getattr(cfg.backend, "value", cfg.backend)
    proc = _processor(backend)  # one stateless processor shared by all modules, as diffusers does
    swapped, kept = 0, {}
    for _, module in site.modules:
        name = type(module.processor).__name__
        if name in PLAIN:
            module.set_processor(proc)
            swapped += 1
        else:
            kept[name] = kept.get(name, 0) + 1
    text = f"{swapped} Attention -> {type(proc).__name__} ({backend})"
    if kept:
        text += "; kept " + ", ".join(f"{n} x{c}" for n, c in sorted(kept.items()))
    return text
