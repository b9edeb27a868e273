"""quantize: int8 / int4 Linear replacements on CPU kernels (gpt-fast's WOQ, and W8A8 dynamic).

``mode: weight_only`` (the default) is for memory-bound work such as LLM decode;
``mode: dynamic`` (int8 only) also quantizes activations per row at run time and runs an
int8 x int8 GEMM, for compute-bound work (SAM's image encoder, a UNet) where weight-only
kernels cannot help. Dynamic int8 changes the numerics more: recipes that use it are judged
by their family's stated quantized fidelity bars.

Decode is memory-bound: each token reads every weight once. int8 (per output channel)
reads 1/4 of the FP32 bytes, int4 (group-wise) 1/8. Activations run in ``act_dtype``. On
our AVX512-BF16 EPYC (benchmarks/kernels_probe.py) the BF16-activation packed kernels are
14-33x faster than the FP32-activation ones, which are slower than a plain FP32 Linear;
DESIGN.md measured BF16-activation int8 GEMV at 4x the FP32 GEMV on an AVX2-only CPU.
So ``auto`` picks bfloat16 on CPU.

Quantized weights can be saved once and loaded on the next start (``cache_dir``), or with
:func:`save_quantized` / :func:`load_quantized`.

>>> import torch, fastpipes
>>> model = torch.nn.Sequential(torch.nn.Linear(256, 256))
>>> report = fastpipes.accelerate(model, {"quantize": {"dtype": "int8"}})
>>> type(model[0]).__name__
'Int8WeightOnlyLinear'
"""
from __future__ import annotations

import fnmatch
from collections import Counter
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import torch
import torch.nn as nn

from fastpipes.errors import InputError
from fastpipes.kernels.woq import (INT4_GROUP_SIZES, Int4WeightOnlyLinear, Int8DynamicLinear,
                                   Int8WeightOnlyLinear)
from fastpipes.passes.base import PassContext, SkipPass, register_pass
from fastpipes.passes.quantize_at_load import QUANTIZED_AT_LOAD, at_load
from fastpipes.passes.quantize_cuda import apply_cuda
from fastpipes.recipe.schema import PrecisionClass, Section


class QuantDtype(str, Enum):
    int8 = "int8"
    int4 = "int4"


class QuantMode(str, Enum):
    weight_only = "weight_only"  # int8/int4 weights, float activations: memory-bound GEMV
    dynamic = "dynamic"  # int8 weights and per-row int8 activations: compute-bound GEMM


class ActDtype(str, Enum):
    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"


class PromptPath(str, Enum):
    # prompts (a few rows and more) on a dense GEMM, in the activation dtype where the CPU
    # has native BF16, else FP32 (kernels/woq_prefill.py); one row keeps the packed kernel
    auto = "auto"
    kernel = "kernel"  # every row count on the packed kernel (slower prompts, the old path)


@dataclass(frozen=True)
class QuantizeConfig(Section):
    dtype: QuantDtype = QuantDtype.int8
    mode: QuantMode = QuantMode.weight_only
    group_size: int = 128  # int4 only: input features per (scale, zero) pair
    act_dtype: ActDtype = ActDtype.auto  # auto = bfloat16 (fastest packed kernels on CPU)
    prompt_path: PromptPath = PromptPath.auto  # weight-only on CPU: the GEMM prompts run on
    components: list[str] = field(default_factory=list)  # [] = the adapter's default
    targets: list[str] = field(default_factory=list)  # fnmatch on module names; [] = all Linear
    exclude: list[str] = field(default_factory=list)  # fnmatch patterns left in FP32
    min_features: int = 0  # skip Linear layers whose in or out features are below this
    include_lm_head: bool = True  # the output projection (largest single GEMV of an LM)
    cache_dir: str | None = None  # save quantized weights here; load them on the next start

    def check(self) -> list[tuple[str, str, str]]:
        out = []
        if self.dtype == QuantDtype.int4 and self.group_size not in INT4_GROUP_SIZES:
            out.append(("group_size", f"int4 group_size {self.group_size} is not supported",
                        ", ".join(map(str, INT4_GROUP_SIZES))))
        if self.mode == QuantMode.dynamic and self.dtype != QuantDtype.int8:
            out.append(("mode", f"mode dynamic needs dtype int8, got {self.dtype.value}",
                        "dtype: int8 with mode: dynamic; int4 only with mode: weight_only"))
        if self.mode == QuantMode.dynamic and self.act_dtype != ActDtype.auto:
            out.append(("act_dtype", f"mode dynamic quantizes activations to int8 itself; "
                        f"act_dtype {self.act_dtype.value} does not apply", "auto"))
        if self.mode == QuantMode.dynamic and self.prompt_path != PromptPath.auto:
            out.append(("prompt_path", "mode dynamic runs every row count on its int8 GEMM; "
                        f"prompt_path {self.prompt_path.value} does not apply", "auto"))
        if self.min_features < 0:
            out.append(("min_features", f"must be >= 0, got {self.min_features}", "an int >= 0"))
        return out

    def numerics(self) -> PrecisionClass:
        return PrecisionClass(self.dtype.value)  # int8 (weight-only or dynamic) or int4


def resolve_act_dtype(act: ActDtype | str, device: str = "cpu") -> str:
    """auto -> bfloat16: BF16-activation WOQ kernels beat FP32 ones on every CPU we measured."""
    act = getattr(act, "value", act)
    return "bfloat16" if act == "auto" else act


def _is_lm_head(name: str) -> bool:
    return name == "lm_head" or name.endswith(".lm_head")


def select_linears(model: nn.Module, cfg: QuantizeConfig) -> dict[str, nn.Linear]:
    """The nn.Linear layers of `model` the config targets, by qualified name (whether the
    kernel can take them is :func:`kernel_skips`' question)."""
    out = {}
    for name, m in model.named_modules():
        if type(m) is not nn.Linear:  # subclasses may carry their own forward
            continue
        if _is_lm_head(name) and not cfg.include_lm_head:
            continue
        if cfg.targets and not any(fnmatch.fnmatchcase(name, p) for p in cfg.targets):
            continue
        if any(fnmatch.fnmatchcase(name, p) for p in cfg.exclude):
            continue
        if min(m.in_features, m.out_features) < cfg.min_features:
            continue
        out[name] = m
    return out


def kernel_skips(linears: dict[str, nn.Linear], dtype: str) -> dict[str, str]:
    """Targeted layers the kernel cannot take, with the reason; they stay FP32 and the
    Report lists them. (A K the kernel cannot take is padded, never a reason to skip.)"""
    if dtype != "int4":
        return {}
    return {n: why for n, m in linears.items() if (why := Int4WeightOnlyLinear.unsupported(m))}


def _set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)


def _bytes(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.numel() * t.element_size()


def quantize_linear(linear: nn.Linear, dtype: str, group_size: int, act_dtype: str
                    ) -> nn.Module:
    """`dtype`: int8 | int4 (weight-only) | int8_dynamic (W8A8, `act_dtype` unused)."""
    if dtype == "int8_dynamic":
        return Int8DynamicLinear.from_linear(linear)
    if dtype == "int8":
        return Int8WeightOnlyLinear.from_linear(linear, act_dtype=act_dtype)
    return Int4WeightOnlyLinear.from_linear(linear, group_size, act_dtype)


# the layout of saved files (FILE_FORMAT) is part of every cache key, so files of another
# layout are never looked up
from fastpipes.passes.quantize_store import (  # noqa: E402,F401  (its home before)
    FILE_FORMAT, cache_fingerprint, fingerprint, load_quantized, save_quantized)


# ---- the pass -----------------------------------------------------------------------------

def _names(items, limit: int = 6) -> str:
    items = list(items)
    more = f", and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def _from_cache(ctx: PassContext, comp: str, model: nn.Module, cache: Path, key: str,
                names: list[str]) -> bool:
    """Load `cache` into `model` if it holds exactly these layers for these weights; a bad
    file (another model's, truncated, of an older layout) is a warning, never a failure."""
    try:
        loaded = load_quantized(model, cache, fingerprint_key=key)
    except InputError as e:
        ctx.warn(f"{comp}: ignored the quantized-weight cache file ({e}); quantizing again "
                 "and rewriting it")
        return False
    assert sorted(loaded) == sorted(names), "the fingerprint hashes the layer names"
    return True


def _release(ctx: PassContext, layers, refs: Counter) -> None:
    for lin in layers:
        for t in (lin.weight, lin.bias):
            if t is not None and refs[id(t)] == 1:
                ctx.release(t)


def _prompts(layers, cfg: QuantizeConfig) -> str:
    """Apply `cfg.prompt_path` to weight-only layers; what their prompts run on, in words."""
    woq = [q for q in layers if hasattr(q, "prompt_rows")]
    if cfg.prompt_path == PromptPath.kernel:
        for q in woq:
            q.prompt_rows = 0  # woq_prefill.NEVER
    plans = sorted({(q.prompt_rows, str(q.prompt_dtype).removeprefix("torch.")) for q in woq})
    return "; prompts: " + ", ".join(
        f"dense {dt} GEMM from {rows} rows" if rows else "the packed kernel at every row count"
        for rows, dt in plans) if plans else ""


def _replace(ctx: PassContext, cfg: QuantizeConfig, comp: str, model: nn.Module,
             linears: dict[str, nn.Linear], dtype: str, act: str) -> tuple[str, Path | None]:
    """Quantize `linears` in place (or load them from the cache file); how, in words."""
    key = fingerprint(linears, dtype, cfg.group_size, act)
    cache = Path(cfg.cache_dir) / f"{comp}-{dtype}-{key}.safetensors" if cfg.cache_dir else None
    # a weight shared with a layer that stays (a tied lm_head) is not the layer's to release
    refs = Counter(id(t) for m in model.modules() for t in m.parameters(recurse=False))
    if cache is not None and cache.exists() and _from_cache(ctx, comp, model, cache, key,
                                                            list(linears)):
        _release(ctx, linears.values(), refs)
        return f"loaded from {cache}", cache
    for name, lin in linears.items():
        q = quantize_linear(lin, dtype, cfg.group_size, act)
        _set_module(model, name, q)
        _release(ctx, [lin], refs)  # low_memory: the FP32 original leaves memory now
    if cache is None:
        return "quantized", None
    try:
        save_quantized(model, cache, key)
        return f"quantized, saved to {cache}", cache
    except OSError as e:  # the quantized model is fine; only the cache is lost
        ctx.warn(f"{comp}: could not save quantized weights to {cache} ({e}); "
                 "the next start quantizes again")
        return "quantized", cache


def _record(ctx: PassContext, cfg: QuantizeConfig, comp: str, model: nn.Module, linears: dict,
            skipped: dict, dtype: str, act: str, how: str, cache: Path | None) -> None:
    """The Report's line and extra["quantize"][comp] for a component just quantized."""
    before = sum(_bytes(m.weight) + _bytes(m.bias) for m in linears.values())
    quantized = {n: model.get_submodule(n) for n in linears}
    padded = {n: (q.in_features, q.k_padded) for n, q in quantized.items()
              if getattr(q, "k_padded", q.in_features) != q.in_features}
    after = sum(_bytes(b) for q in quantized.values() for b in q.buffers())
    what = ("int8 weights + per-row int8 activations (dynamic W8A8)" if dtype == "int8_dynamic"
            else f"{dtype} weight-only" + (f" (group {cfg.group_size})" if dtype == "int4" else "")
            + f", {act} activations")
    line = (f"{len(linears)} Linear -> {what}; weights {before / 2**20:.1f} MiB -> "
            f"{after / 2**20:.1f} MiB ({how})" + _prompts(quantized.values(), cfg))
    if padded:
        line += (f"; in_features zero-padded for the kernel in {len(padded)}: "
                 + _names(f"{n} {k}->{kp}" for n, (k, kp) in padded.items()))
    if skipped:
        line += f"; {len(skipped)} left in FP32: " + _names(skipped)
    ctx.change(comp, line)
    ctx.report.extra.setdefault("quantize", {})[comp] = {
        "layers": len(linears), "bytes_before": before, "bytes_after": after,
        "dtype": dtype, "act_dtype": act, "cache": str(cache) if cache else None,
        "skipped": dict(skipped), "padded": {n: list(kk) for n, kk in padded.items()}}


def _quantize_cpu(ctx: PassContext, cfg: QuantizeConfig, comp: str, model: nn.Module,
                  dtype: str, act: str) -> tuple[int, bool]:
    """(1 if `comp` was quantized (or already was, at load) else 0, whether the kernel
    refused any targeted layer)."""
    if at_load(ctx, comp, model, dtype, cfg.group_size, act):
        prompts = _prompts(model.modules(), cfg)
        if prompts:
            ctx.change(comp, prompts.removeprefix("; "))
        return 1, False
    targeted = select_linears(model, cfg)
    skipped = kernel_skips(targeted, dtype)
    linears = {n: m for n, m in targeted.items() if n not in skipped}
    if skipped:
        ctx.warn(f"{comp}: {len(skipped)} Linear layer(s) left in FP32, the {dtype} kernel "
                 f"cannot take them: " + _names(f"{n} ({why})" for n, why in skipped.items()))
    if not linears:
        ctx.change(comp, "no Linear layer matched targets/exclude/min_features: left as is"
                   if not skipped else f"none of the {len(skipped)} targeted Linear layers "
                   f"fits the {dtype} kernel: left as is")
        return 0, bool(skipped)
    how, cache = _replace(ctx, cfg, comp, model, linears, dtype, act)
    _record(ctx, cfg, comp, model, linears, skipped, dtype, act, how, cache)
    return 1, bool(skipped)


@register_pass("quantize", QuantizeConfig,
               "int8/int4 Linear layers: weight-only (WOQ) or int8 dynamic (W8A8)")
def apply(ctx: PassContext, cfg: QuantizeConfig) -> None:
    dynamic = cfg.mode == QuantMode.dynamic
    act = "int8" if dynamic else resolve_act_dtype(cfg.act_dtype)
    dtype = "int8_dynamic" if dynamic else cfg.dtype.value
    done, any_skipped = 0, False
    for comp, model in ctx.components("quantize", cfg.components).items():
        dev = next(iter(model.parameters()), torch.empty(0)).device
        if dev.type == "cuda":  # CUDA kernels of their own (kernels/woq_cuda.py)
            done += apply_cuda(ctx, cfg, comp, model, select_linears(model, cfg), str(dev))
            continue
        if dev.type != "cpu":
            raise SkipPass(f"the WOQ kernels used here are CPU and CUDA kernels; {comp} is on {dev}")
        n, skipped = _quantize_cpu(ctx, cfg, comp, model, dtype, act)
        done, any_skipped = done + n, any_skipped or skipped
    if not done:
        raise SkipPass("no Linear layer matched in any component" + (
            f"; the {dtype} kernel cannot take the targeted ones (see warnings)"
            if any_skipped else ""))
