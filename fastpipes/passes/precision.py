"""precision: BF16 / FP16 compute, as ``autocast`` around the components' calls or as a
weight ``cast``, with modules or whole components kept in FP32.

- ``autocast``: each component's ``forward`` (the call boundary the adapter declares) runs
  under ``torch.autocast(device, dtype)``; weights stay FP32 and autocast casts per op.
  Cheapest to apply, keeps FP32 master weights, costs a weight cast per matmul per call.
- ``cast``: weights are cast once; float inputs are cast to the compute dtype at the
  component boundary. Half the weight memory and no per-call weight casts.

In both modes, low-precision float outputs are cast back to the caller's float input dtype
(or the component's original dtype when the call has no float input), so the pipeline
around a component sees the dtypes it saw before. ``keep_fp32`` holds fnmatch patterns on
qualified module names inside a component (``"*norm*"``) or whole component names
(``"vae"``); kept modules run in FP32 with low-precision inputs upcast.

Wrappers are instance attributes (``module.forward = ...``) so accelerate()'s snapshot
undoes them; everything they need is computed at apply time.

>>> fastpipes.accelerate(model, {"precision": {"mode": "cast", "keep_fp32": ["*norm*"]}})  # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum
from fnmatch import fnmatchcase
from typing import Any, Callable

import torch
import torch.nn as nn

from fastpipes.passes.base import PassContext, SkipPass, register_pass
from fastpipes.recipe.schema import PrecisionClass, Section


class PrecisionMode(str, Enum):
    autocast = "autocast"
    cast = "cast"


class PrecisionDtype(str, Enum):
    bfloat16 = "bfloat16"
    float16 = "float16"


DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}
SHORT = {"bfloat16": "bf16", "float16": "fp16"}  # the names hardware.native() takes


@dataclass(frozen=True)
class PrecisionConfig(Section):
    mode: PrecisionMode = PrecisionMode.autocast
    dtype: PrecisionDtype = PrecisionDtype.bfloat16
    components: list[str] = field(default_factory=list)  # [] = the adapter's default
    # fnmatch patterns on module names inside a component ("*norm*"), or component names
    keep_fp32: list[str] = field(default_factory=list)

    def numerics(self) -> PrecisionClass:
        return PrecisionClass(SHORT[self.dtype.value])


# ---- casting nested call arguments and outputs ---------------------------------------------

def map_tensors(obj: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """`obj` with `fn` applied to every tensor in tensors, tuples, lists, dicts and dataclasses
    (including transformers' ModelOutput). Other objects (caches, None, ints) pass through."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, (list, tuple)):
        items = [map_tensors(v, fn) for v in obj]
        if hasattr(obj, "_fields"):  # namedtuple
            return type(obj)(*items)
        return type(obj)(items)
    if isinstance(obj, dict):
        items = {k: map_tensors(v, fn) for k, v in obj.items()}
        if dataclasses.is_dataclass(obj):  # ModelOutput: an OrderedDict and a dataclass
            return type(obj)(**items)
        return items if type(obj) is dict else type(obj)(items)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changes = {f.name: map_tensors(getattr(obj, f.name), fn)
                   for f in dataclasses.fields(obj) if f.init}
        return dataclasses.replace(obj, **changes)
    return obj


def first_float_dtype(args: tuple, kwargs: dict) -> torch.dtype | None:
    """dtype of the first floating tensor among the top-level call arguments."""
    for a in args:
        if isinstance(a, torch.Tensor) and a.is_floating_point():
            return a.dtype
    for a in kwargs.values():
        if isinstance(a, torch.Tensor) and a.is_floating_point():
            return a.dtype
    return None


def _caster(src: torch.dtype | None, dst: torch.dtype) -> Callable[[torch.Tensor], torch.Tensor]:
    """Tensor fn casting floating tensors (of dtype `src`, or any float dtype if None) to `dst`."""
    if src is None:
        return lambda t: t.to(dst) if t.is_floating_point() and t.dtype != dst else t
    return lambda t: t.to(dst) if t.dtype == src else t


# ---- the wrappers ---------------------------------------------------------------------------
# Per-call cost matters at small shapes (one Python frame + the casts): a bare tensor takes
# a fast path; nested structures go through map_tensors.

def _cast_out(out: Any, src: torch.dtype, dst: torch.dtype) -> Any:
    if isinstance(out, torch.Tensor):
        return out.to(dst) if out.dtype == src else out
    return map_tensors(out, _caster(src, dst))


def _cast_in(args: tuple, dst: torch.dtype, fn) -> tuple:
    return tuple(
        (a.to(dst) if a.is_floating_point() and a.dtype != dst else a)
        if isinstance(a, torch.Tensor) else map_tensors(a, fn) for a in args)


def _autocast_forward(forward, device_type: str, dtype: torch.dtype, default_out: torch.dtype):
    """forward run under autocast; low-precision outputs cast back to the caller's dtype."""

    def wrapped(*args, **kwargs):
        with torch.autocast(device_type, dtype=dtype):
            out = forward(*args, **kwargs)
        caller = first_float_dtype(args, kwargs) or default_out
        return out if caller == dtype else _cast_out(out, dtype, caller)

    return wrapped


def _cast_forward(forward, dtype: torch.dtype, default_out: torch.dtype):
    """forward of a cast component: float inputs -> dtype, outputs back to the caller's dtype."""
    to_low = _caster(None, dtype)

    def wrapped(*args, **kwargs):
        caller = first_float_dtype(args, kwargs) or default_out
        if kwargs:
            kwargs = map_tensors(kwargs, to_low)
        out = forward(*_cast_in(args, dtype, to_low), **kwargs)
        return out if caller == dtype else _cast_out(out, dtype, caller)

    return wrapped


def _fp32_forward(forward, device_type: str, low: torch.dtype, cast_back: bool):
    """forward of a module kept in FP32: autocast off, `low` inputs upcast; with `cast_back`
    (cast mode) FP32 outputs go back to `low` for the low-precision modules around it."""
    up = _caster(low, torch.float32)

    def wrapped(*args, **kwargs):
        args = tuple((a.float() if a.dtype == low else a) if isinstance(a, torch.Tensor)
                     else map_tensors(a, up) for a in args)
        if kwargs:
            kwargs = map_tensors(kwargs, up)
        if cast_back:  # cast mode: no autocast is running, nothing to switch off
            return _cast_out(forward(*args, **kwargs), torch.float32, low)
        with torch.autocast(device_type, enabled=False):
            return forward(*args, **kwargs)

    return wrapped


# ---- apply ----------------------------------------------------------------------------------

def _device_and_dtype(module: nn.Module) -> tuple[str, torch.dtype]:
    for p in module.parameters():
        if p.is_floating_point():
            return p.device.type, p.dtype
    return "cpu", torch.float32


def kept_modules(module: nn.Module, patterns: list[str]) -> dict[str, nn.Module]:
    """Outermost submodules whose qualified name matches a pattern (children of a kept
    module are kept with it and not wrapped again)."""
    kept: dict[str, nn.Module] = {}
    for qname, m in module.named_modules():
        if not qname or any(qname.startswith(k + ".") for k in kept):
            continue
        if any(fnmatchcase(qname, p) for p in patterns):
            kept[qname] = m
    return kept


def _cast_weights(module: nn.Module, dtype: torch.dtype, kept: dict[str, nn.Module],
                  release: Callable[[torch.Tensor], None]) -> tuple[int, int]:
    """Cast float params/buffers outside kept subtrees (new tensors via .data, never in
    place), module by module, handing each replaced original to `release` (which may move
    it out of memory). Returns (params cast, buffers cast)."""
    skip = {id(m) for k in kept.values() for m in k.modules()}
    n_params = n_buffers = 0
    for m in module.modules():
        if id(m) in skip or getattr(m, "keeps_own_dtypes", False):  # e.g. quantized layers
            continue
        params = [(p, p.data.data_ptr()) for p in m._parameters.values() if p is not None]
        buffers = [b for b in m._buffers.values() if b is not None]
        n_params += sum(p.is_floating_point() and p.dtype != dtype for p, _ in params)
        n_buffers += sum(b.is_floating_point() and b.dtype != dtype for b in buffers)
        m._apply(lambda t: t.to(dtype) if t.is_floating_point() else t, recurse=False)
        live = {id(b) for b in m._buffers.values()}
        for p, ptr in params:
            if p.data.data_ptr() != ptr:  # given new data: the original is unused now
                release(p)
        for b in buffers:
            if id(b) not in live:  # replaced by a new tensor object
                release(b)
    return n_params, n_buffers


@register_pass("precision", PrecisionConfig, "bf16/fp16 compute: autocast or weight cast")
def apply(ctx: PassContext, cfg: PrecisionConfig) -> None:
    dtype = DTYPES[cfg.dtype.value]
    components = ctx.components("precision", cfg.components)
    all_names = set(ctx.adapter.components())
    whole = [k for k in cfg.keep_fp32 if k in all_names]
    patterns = [k for k in cfg.keep_fp32 if k not in all_names]
    entry = dict(ctx.adapter.entry_points())

    targets = {n: m for n, m in components.items() if n not in whole}
    for n in whole:
        if n in components:
            ctx.change(n, "kept in float32 (keep_fp32)")
    if not targets:
        raise SkipPass("every selected component is kept in float32 by keep_fp32")

    matched: set[str] = set()
    for name, component in targets.items():
        boundary = entry.get(name, component)  # where the pipeline calls into the component
        device_type, orig = _device_and_dtype(component)
        kept = kept_modules(component, patterns)
        matched |= {p for p in patterns for q in kept if fnmatchcase(q, p)}
        if cfg.mode is PrecisionMode.autocast:
            boundary.forward = _autocast_forward(boundary.forward, device_type, dtype, orig)
            what = f"forward under autocast({device_type}, {cfg.dtype.value})"
        else:
            n_params, n_buffers = _cast_weights(component, dtype, kept, ctx.release)
            boundary.forward = _cast_forward(boundary.forward, dtype, orig)
            what = (f"{n_params} parameters and {n_buffers} buffers cast to {cfg.dtype.value}; "
                    f"float inputs -> {cfg.dtype.value}")
        for m in kept.values():
            m.forward = _fp32_forward(m.forward, device_type, dtype,
                                      cast_back=cfg.mode is PrecisionMode.cast)
        if kept:
            n_kept = sum(p.numel() > 0 for m in kept.values() for p in m.parameters())
            what += (f"; {len(kept)} modules ({n_kept} parameters) kept float32 "
                     f"({', '.join(patterns)})")
        ctx.change(name, what + "; outputs cast back to the caller's dtype")

    _upcast_fp32_entries(ctx, dtype, set(targets))
    for p in patterns:
        if p not in matched:
            ctx.warn(f"keep_fp32 pattern {p!r} matched no module and no component "
                     f"(components: {', '.join(sorted(all_names))})")
    _warn_if_not_native(ctx, cfg, targets)


def _upcast_fp32_entries(ctx: PassContext, dtype: torch.dtype, changed: set[str]) -> None:
    """Where a component that stays FP32 is fed by a low-precision one (SDXL's VAE decoding
    BF16 latents), cast `dtype` inputs to float32 at its entry."""
    up = _caster(dtype, torch.float32)
    for comp, obj, method in ctx.adapter.fp32_entries():
        params = list(obj.parameters()) if isinstance(obj, nn.Module) else []
        if comp in changed or not params or params[0].dtype != torch.float32:
            continue
        fn = getattr(obj, method)
        setattr(obj, method, _upcasting(fn, up))  # an instance attribute: snapshotted
        ctx.change(comp, f"{method}() casts {SHORT[_name(dtype)]} inputs to float32 (it stays FP32)")


def _name(dtype: torch.dtype) -> str:
    return next(k for k, v in DTYPES.items() if v == dtype)


def _upcasting(fn, up):
    def wrapped(*args, **kwargs):
        return fn(*map_tensors(args, up), **map_tensors(kwargs, up))

    return wrapped


def _warn_if_not_native(ctx: PassContext, cfg: PrecisionConfig, targets: dict[str, nn.Module]) -> None:
    """A recipe that forgot `requires` still tells the user when the dtype is slow here
    (accelerate() already warns for what `requires` declares)."""
    short = SHORT[cfg.dtype.value]
    declared = ctx.recipe.requires.native_bf16 if short == "bf16" else ctx.recipe.requires.native_fp16
    if declared:
        return
    devices = {_device_and_dtype(m)[0] for m in targets.values()}
    for device in sorted(devices):
        if not ctx.hardware.native(short, device):
            ctx.warn(ctx.hardware.low_precision_note(short))
