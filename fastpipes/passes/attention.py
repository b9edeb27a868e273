"""attention: scaled_dot_product_attention in place of eager attention at the sites the
adapter declares.

Each :class:`~fastpipes.pipelines.base.AttentionSite` has a ``kind``; the handler
registered for that kind (``passes/attention_sites/<kind>.py``) rewrites the site and
returns a one-line description of what it changed. Backends:

- ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention``; on CPU PyTorch picks its
  fused flash-attention kernel when it can (the default).
- ``math``: the same call restricted to the reference math kernel (for checking).
- ``ipex``: Intel Extension for PyTorch's CPU flash attention, when it imports.
- ``native``: fastpipes' own C++ flash-attention kernel for SAM's rel-pos attention
  (:mod:`fastpipes.kernels.relpos_flash`: AVX512-BF16 products, the bias added inside the
  kernel, no mask), built for the CPU on first use; BF16.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from fastpipes.hardware import import_ipex
from fastpipes.kernels.relpos_flash import why_unavailable as native_unavailable
from fastpipes.passes.attention_sites import SITE_HANDLERS
from fastpipes.passes.base import PassContext, SkipPass, register_pass
from fastpipes.recipe.schema import PrecisionClass, Section


# site kinds whose handler serves each backend that is not for every site
BACKEND_SITE_KINDS = {"ipex": ("sam_relpos",), "native": ("sam_relpos",)}


class AttentionBackend(str, Enum):
    sdpa = "sdpa"
    math = "math"
    ipex = "ipex"
    native = "native"


@dataclass(frozen=True)
class AttentionConfig(Section):
    backend: AttentionBackend = AttentionBackend.sdpa
    components: list[str] = field(default_factory=list)  # [] = every component with sites
    # SAM rel-pos bias: query rows per block when the additive mask is built block-wise;
    # 0 = whole mask at once (most memory for global attention). Keep it >= 768: PyTorch's
    # CPU flash kernel tiles queries by 256 rows only when a call has >= 768 of them (64
    # rows below), and smaller tiles re-read K/V more often (~2x slower at 256 rows here).
    block_size: int = 1024

    def numerics(self) -> PrecisionClass:
        # the native kernel computes in BF16 whatever the activations' dtype
        return PrecisionClass.bf16 if self.backend is AttentionBackend.native else \
            PrecisionClass.exact

    def check(self) -> list[tuple[str, str, str]]:
        if self.block_size < 0:
            return [("block_size", f"must be >= 0, got {self.block_size}", "0 or a positive int")]
        return []

    def preflight(self, target) -> list:
        backend = self.backend.value
        if backend not in BACKEND_SITE_KINDS:
            return []
        kinds = {s.kind for s in target.adapter.attention_sites()} - set(
            BACKEND_SITE_KINDS[backend])
        if kinds:
            return [target.problem(
                "attention.backend", f"backend '{backend}' serves only SAM's rel-pos "
                                     f"attention, not {', '.join(sorted(kinds))} attention",
                "sdpa or math" + (" (for transformers / diffusers models, the ipex pass)"
                                  if backend == "ipex" else ""))]
        if backend == "native":
            why = native_unavailable()
            return [] if why is None else [target.problem(
                "attention.backend", f"backend 'native' is unavailable: {why}",
                "sdpa (PyTorch's own CPU flash kernel) or math")]
        ipex, why = import_ipex()  # importing IPEX registers its CPU SDPA kernels
        return [] if ipex is not None else [target.problem(
            "attention.backend", f"backend 'ipex' is unavailable: {why}",
            "sdpa (PyTorch's own CPU flash kernel) or math")]


@register_pass("attention", AttentionConfig, "SDPA attention (block-wise rel-pos mask for SAM)")
def apply(ctx: PassContext, cfg: AttentionConfig) -> None:
    wanted = set(ctx.components("attention", cfg.components)) if cfg.components else None
    sites = [s for s in ctx.adapter.attention_sites() if wanted is None or s.component in wanted]
    if not sites:
        raise SkipPass(f"the {ctx.adapter.name} pipeline declares no attention sites")
    for site in sites:
        handler = SITE_HANDLERS.get(site.kind)
        ctx.change(site.component, handler(ctx, site, cfg))
