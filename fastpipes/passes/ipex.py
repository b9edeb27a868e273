"""ipex: Intel Extension for PyTorch's module rewrites (``ipex.optimize`` /
``ipex.llm.optimize``), used only when it imports.

IPEX is archived upstream and its last CPU release (2.8) pins torch 2.8: with a newer torch
it installs but its import dies (``AttributeError: module 'os' has no attribute 'exit'``).
So fastpipes never requires it: the import is probed inside ``try/except Exception`` at
apply time (never at ``import fastpipes``), and a release whose major.minor differs from
torch's is not imported at all. With ``fallback: native`` a missing IPEX is a visible
fallback (status "fallback" + a warning): the pipeline stays on PyTorch's own kernels.

Both ``ipex.optimize`` and ``ipex.llm.optimize`` (``llm: true``) are asked to work in
place: no second copy of the weights, and the model's own ``generate`` runs IPEX's decoder
layers, fused attention and KV cache. Should IPEX return a different object anyway, it is
put in place through the adapter (``set_component``), or, for a component that cannot be
replaced (a plain module given to accelerate()), the component's ``forward`` delegates to it.

>>> fastpipes.accelerate(model, {"ipex": {"dtype": "bfloat16", "fallback": "native"}})  # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
import torch
import torch.nn as nn

from fastpipes.errors import FastpipesError
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
        # in place: ipex.llm.optimize swaps the model's generate path (_sample, forward, its
        # own KV cache) as instance attributes, which a copy would keep from the object the
        # user calls; accelerate()'s snapshot undoes them
        return ipex.llm.optimize(module, dtype=dtype, inplace=True)
    # in place too: a copy would hold a second set of weights while accelerate() runs (for the
    # SDXL UNet in FP32, 10 GB more); IPEX keeps the Parameter objects and swaps their data,
    # which the snapshot restores on failure
    return ipex.optimize(module, dtype=dtype, inplace=True)


def _llm_converted(module: nn.Module) -> bool:
    """ipex.llm.optimize returns unsupported models unconverted (a warning at most)."""
    return any(type(m).__module__.startswith("intel_extension_for_pytorch.transformers")
               for m in module.modules())


@register_pass("ipex", IpexConfig, "Intel Extension for PyTorch module rewrites (optional)")
def apply(ctx: PassContext, cfg: IpexConfig) -> None:
    ipex, why = import_ipex()
    if ipex is None:  # the preflight refused this unless fallback is native
        rec = ctx.report.record(ctx.pass_name)
        rec.status, rec.reason = PassStatus.fallback, f"native PyTorch kernels: {why}"
        ctx.warn(f"IPEX unavailable, using native PyTorch kernels: {why}")
        return
    prec = ctx.recipe.section("precision")
    if (cfg.dtype is IpexDtype.bfloat16 and not cfg.llm
            and getattr(getattr(prec, "mode", None), "value", None) != "autocast"):
        # ipex.optimize(dtype=bfloat16) casts the weights and leaves the inputs to autocast:
        # FP32 inputs then fail inside oneDNN ("could not create a primitive descriptor")
        ctx.warn("ipex.optimize(dtype=bfloat16) expects BF16 inputs or autocast; add "
                 "precision: {mode: autocast, dtype: bfloat16} for FP32 callers")
    for name, module in ctx.components("ipex", cfg.components).items():
        config = getattr(module, "config", None)
        if cfg.llm and config is not None and not getattr(config, "architectures", None):
            # IPEX picks its conversion by config.architectures[0], which models built from a
            # config (not loaded with from_pretrained) do not have
            config.architectures = [type(module).__name__]
            ctx.change(name, f"config.architectures = {config.architectures}")
            added_architectures = config
        else:
            added_architectures = None
        try:
            optimized = _optimize(ipex, module, cfg)
        except BaseException:
            if added_architectures is not None:  # configs are not in every snapshot
                added_architectures.architectures = None
            raise
        how = "ipex.llm.optimize" if cfg.llm else "ipex.optimize"
        if cfg.llm and not _llm_converted(optimized):
            if added_architectures is not None:
                added_architectures.architectures = None
            raise FastpipesError(
                f"ipex pass: ipex.llm.optimize left {name!r} ({type(module).__name__}) "
                "unconverted; it converts only the decoder architectures it lists (e.g. "
                "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM); set ipex.llm: false "
                "for the generic ipex.optimize")
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
