"""ipex: Intel Extension for PyTorch's module rewrites (``ipex.optimize`` /
``ipex.llm.optimize``), used only when it imports.

IPEX is archived upstream and its last CPU release (2.8) pins torch 2.8: with a newer torch
it installs but its import dies (``AttributeError: module 'os' has no attribute 'exit'``).
So fastpipes never requires it: the import is probed inside ``try/except Exception`` at
apply time (never at ``import fastpipes``), and a release whose major.minor differs from
torch's is not imported at all. With ``fallback: native`` a missing IPEX is a visible
fallback (status "fallback" + a warning): the pipeline stays on PyTorch's own kernels.

IPEX returns an optimized *copy*; it is put in place through the adapter
(``set_component``), or, for a component that cannot be replaced (a plain module given to
accelerate()), the component's ``forward`` delegates to the copy.

>>> fastpipes.accelerate(model, {"ipex": {"dtype": "bfloat16", "fallback": "native"}})  # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import torch
import torch.nn as nn

from fastpipes.hardware import import_ipex
from fastpipes.passes.base import PassContext, register_pass
from fastpipes.recipe.schema import PrecisionClass, Section
from fastpipes.report import PassStatus

class IpexDtype(str, Enum):
    float32 = "float32"
    bfloat16 = "bfloat16"


class IpexFallback(str, Enum):
    error = "error"  # IPEX missing or broken: accelerate() fails (pipeline untouched)
    native = "native"  # ... the pass is recorded as "fallback" and PyTorch kernels are used


@dataclass(frozen=True)
class IpexConfig(Section):
    components: list[str] = field(default_factory=list)  # [] = the adapter's default
    dtype: IpexDtype = IpexDtype.float32
    llm: bool = False  # ipex.llm.optimize (transformers decoder models) instead of ipex.optimize
    fallback: IpexFallback = IpexFallback.error

    def numerics(self) -> PrecisionClass:
        return PrecisionClass.bf16 if self.dtype is IpexDtype.bfloat16 else PrecisionClass.exact

    def preflight(self, target) -> list:
        if self.fallback is IpexFallback.native:
            return []
        ipex, why = import_ipex()
        return [] if ipex is not None else [target.problem(
            "ipex", f"IPEX is unavailable: {why}", "ipex.fallback: native, or drop the section")]


def _optimize(ipex, module: nn.Module, cfg: IpexConfig) -> nn.Module:
    dtype = torch.bfloat16 if cfg.dtype is IpexDtype.bfloat16 else torch.float32
    module.eval()  # ipex.optimize's inference path (weight prepacking) needs eval mode
    if cfg.llm:
        return ipex.llm.optimize(module, dtype=dtype, inplace=False)
    return ipex.optimize(module, dtype=dtype, inplace=False)


@register_pass("ipex", IpexConfig, "Intel Extension for PyTorch module rewrites (optional)")
def apply(ctx: PassContext, cfg: IpexConfig) -> None:
    ipex, why = import_ipex()
    if ipex is None:  # the preflight refused this unless fallback is native
        rec = ctx.report.record(ctx.pass_name)
        rec.status, rec.reason = PassStatus.fallback, f"native PyTorch kernels: {why}"
        ctx.warn(f"IPEX unavailable, using native PyTorch kernels: {why}")
        return
    for name, module in ctx.components("ipex", cfg.components).items():
        optimized = _optimize(ipex, module, cfg)
        how = "ipex.llm.optimize" if cfg.llm else "ipex.optimize"
        if optimized is module:
            ctx.change(name, f"{how}(dtype={cfg.dtype.value}) in place")
            continue
        try:
            ctx.adapter.set_component(name, optimized)
            ctx.change(name, f"replaced by {how}(dtype={cfg.dtype.value}) copy")
        except NotImplementedError:
            # the component is the pipeline itself: delegate its forward to the copy
            module.forward = optimized.__call__
            module.__dict__["_fastpipes_ipex_module"] = optimized  # keep the copy alive
            ctx.change(name, f"forward delegates to a {how}(dtype={cfg.dtype.value}) copy")
