"""kv_cache: the KV cache transformers' ``generate`` uses, and (optionally) a compiled decode.

``static`` pre-allocates the cache at ``max_cache_len`` so every decode step has the same
shapes: the condition for ``torch.compile`` to trace one decode graph (gpt-fast's recipe).
With ``compile_decode`` transformers itself compiles only the one-token decode forward
(prefill stays eager, so a new prompt length does not recompile): this sets the model's
``generation_config.compile_config`` and allows it on CPU, which transformers otherwise
skips. Compile time lands in the first ``generate`` call.

>>> report = fastpipes.accelerate(model, {"kv_cache": {"implementation": "static"}})  # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from fastpipes.passes.base import PassContext, SkipPass, register_pass
from fastpipes.recipe.schema import Section


class CacheImplementation(str, Enum):
    static = "static"
    dynamic = "dynamic"


@dataclass(frozen=True)
class KvCacheConfig(Section):
    implementation: CacheImplementation = CacheImplementation.static
    max_cache_len: int = 0  # 0 = sized per call from max_length (prompt + new tokens)
    components: list[str] = field(default_factory=list)  # [] = the adapter's default
    compile_decode: bool = False  # let transformers torch.compile the decode step (static only)
    compile_mode: str = "default"  # torch.compile mode of that decode step
    compile_fullgraph: bool = True

    def check(self) -> list[tuple[str, str, str]]:
        out = []
        if self.max_cache_len < 0:
            out.append(("max_cache_len", f"must be >= 0, got {self.max_cache_len}", "0 (auto) or a positive int"))
        if self.compile_decode and self.implementation != CacheImplementation.static:
            out.append(("compile_decode", "a compiled decode needs the static cache",
                        "implementation: static"))
        if self.compile_mode not in ("default", "reduce-overhead", "max-autotune",
                                     "max-autotune-no-cudagraphs"):
            out.append(("compile_mode", f"unknown torch.compile mode {self.compile_mode!r}",
                        "default, reduce-overhead, max-autotune, max-autotune-no-cudagraphs"))
        return out


@register_pass("kv_cache", KvCacheConfig, "static/dynamic KV cache for generate (+ compiled decode)")
def apply(ctx: PassContext, cfg: KvCacheConfig) -> None:
    done = 0
    for comp, model in ctx.components("kv_cache", cfg.components).items():
        gen = getattr(model, "generation_config", None)
        if gen is None or not hasattr(model, "generate"):
            ctx.change(comp, "not a transformers generative model: left as is")
            continue
        # generation_config is one of the adapter's state objects: replaced attributes are
        # restored if a later pass fails
        gen.cache_implementation = "static" if cfg.implementation == CacheImplementation.static else "dynamic"
        gen.max_cache_len = cfg.max_cache_len or None
        what = f"generation_config.cache_implementation = {gen.cache_implementation!r}"
        if cfg.max_cache_len:
            what += f", max_cache_len = {cfg.max_cache_len}"
        if cfg.compile_decode:
            from transformers import CompileConfig

            cc = CompileConfig(fullgraph=cfg.compile_fullgraph, mode=cfg.compile_mode, dynamic=False)
            cc._compile_all_devices = True  # transformers compiles on CUDA only unless told
            gen.compile_config = cc
            gen.disable_compile = False
            what += f"; decode step torch.compile(mode={cfg.compile_mode!r}) on first generate"
        ctx.change(comp, what)
        done += 1
    if not done:
        raise SkipPass("no component is a transformers generative model")
