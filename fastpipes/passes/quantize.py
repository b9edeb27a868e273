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
import hashlib
import json
import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import torch
import torch.nn as nn

from fastpipes.errors import InputError
from fastpipes.fingerprint import content_hash, content_problem
from fastpipes.kernels.woq import (INT4_GROUP_SIZES, ROWS, Int4WeightOnlyLinear,
                                   Int8DynamicLinear, Int8WeightOnlyLinear, aligned)
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


@dataclass(frozen=True)
class QuantizeConfig(Section):
    dtype: QuantDtype = QuantDtype.int8
    mode: QuantMode = QuantMode.weight_only
    group_size: int = 128  # int4 only: input features per (scale, zero) pair
    act_dtype: ActDtype = ActDtype.auto  # auto = bfloat16 (fastest packed kernels on CPU)
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


def quantize_linear(linear: nn.Linear, dtype: str, group_size: int, act_dtype: str,
                    keep_nibbles: bool = False) -> nn.Module:
    """`dtype`: int8 | int4 (weight-only) | int8_dynamic (W8A8, `act_dtype` unused)."""
    if dtype == "int8_dynamic":
        return Int8DynamicLinear.from_linear(linear)
    if dtype == "int8":
        return Int8WeightOnlyLinear.from_linear(linear, act_dtype=act_dtype)
    return Int4WeightOnlyLinear.from_linear(linear, group_size, act_dtype, keep_nibbles)


# the layout of saved files; part of every cache key, so files of another layout are never
# looked up (2: K padded to 16 for int8, to the group size for int4)
FILE_FORMAT = "fastpipes-woq/2"


def fingerprint(linears: dict[str, nn.Linear], dtype: str, group_size: int, act: str) -> str:
    """A cheap key of which layers, at which shapes, with which weights (1024 sampled values
    per layer, so a different checkpoint or seed gets a different cache file)."""
    h = hashlib.sha256(f"{FILE_FORMAT}/{dtype}/{group_size}/{act}/{torch.__version__}".encode())
    for name, m in linears.items():
        w = m.weight.detach().reshape(-1)
        sample = w[:: max(1, w.numel() // 1024)][:1024].float().contiguous()
        h.update(f"{name}:{tuple(m.weight.shape)}:{m.bias is not None}".encode())
        h.update(sample.numpy().tobytes())
    return h.hexdigest()[:16]


# ---- save / load ------------------------------------------------------------------------

def _unpack_nibbles(packed: torch.Tensor) -> torch.Tensor:
    # [N, K/2] uint8 -> [N, K] int32, our own portable layout (high nibble first)
    hi, lo = (packed >> 4).to(torch.int32), (packed & 0xF).to(torch.int32)
    return torch.stack([hi, lo], dim=-1).reshape(packed.shape[0], -1)


def save_quantized(model: nn.Module, path: str | Path, fingerprint_key: str = "") -> int:
    """Write every WOQ layer of `model` to a safetensors file; returns how many.

    int4 weights are stored as plain nibbles (not the CPU kernel's packed layout, which is
    ISA-specific) and re-packed on load. The file appears atomically (written beside it,
    then renamed), so a reader never sees half of it.

    >>> save_quantized(model, "llama-int8.safetensors")   # doctest: +SKIP
    """
    from safetensors.torch import save_file

    tensors, meta = {}, {}
    for name, m in model.named_modules():
        if isinstance(m, (Int8WeightOnlyLinear, Int8DynamicLinear)):
            tensors[f"{name}.weight"] = m.weight
            tensors[f"{name}.scales"] = m.scales
        elif isinstance(m, Int4WeightOnlyLinear):
            tensors[f"{name}.nibbles"] = getattr(m, "nibbles", None)
            assert tensors[f"{name}.nibbles"] is not None, "int4 layers keep nibbles for saving"
            tensors[f"{name}.scales_and_zeros"] = m.scales_and_zeros
        else:
            continue
        if m.bias is not None:
            tensors[f"{name}.bias"] = m.bias
        kind = {Int8WeightOnlyLinear: "int8", Int8DynamicLinear: "int8_dynamic"}.get(type(m), "int4")
        meta[name] = {"kind": kind,
                      "in": m.in_features, "out": m.out_features,
                      "group_size": getattr(m, "group_size", 0),
                      "act_dtype": str(m.act_dtype).removeprefix("torch.")}
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(tmp), metadata={"fastpipes_woq": json.dumps(meta),
                                                "format": FILE_FORMAT,
                                                "fingerprint": fingerprint_key,
                                                "content_sha256": content_hash(tensors, tensors.get)})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return len(meta)


def _empty_layer(info: dict, has_bias: bool) -> nn.Module:
    """A quantized layer of the kind and shape `info` describes (buffers allocated, aligned)."""
    act = getattr(torch, info["act_dtype"], None)
    if info["act_dtype"] not in ("float32", "bfloat16", "int8") or act is None:
        raise ValueError(f"act_dtype {info['act_dtype']!r}")
    if info["kind"] == "int8_dynamic":
        return Int8DynamicLinear(info["in"], info["out"], has_bias)
    if info["kind"] == "int8":
        return Int8WeightOnlyLinear(info["in"], info["out"], has_bias, act)
    if info["kind"] == "int4" and info["group_size"] in INT4_GROUP_SIZES:
        return Int4WeightOnlyLinear(info["in"], info["out"], has_bias, info["group_size"], act)
    raise ValueError(f"kind {info['kind']!r} with group_size {info.get('group_size')!r}")


def _read_layer(f, keys: set, path, name: str, info: dict) -> nn.Module:
    """One layer from an open safetensors file. Every tensor is checked against the shape
    and dtype the layer needs and copied into the layer's own (aligned) buffers: a tensor
    straight from the file's memory map never reaches a kernel."""
    q = _empty_layer(info, f"{name}.bias" in keys)
    int4 = isinstance(q, Int4WeightOnlyLinear)
    if int4:  # the file holds portable nibbles, repacked below into the kernel's layout
        q.nibbles = torch.empty(q.out_features, q.k_padded // 2, dtype=torch.uint8)
    for part in ("nibbles", "scales_and_zeros", "bias") if int4 else ("weight", "scales", "bias"):
        buf, key = getattr(q, part), f"{name}.{part}"
        if buf is None:
            continue
        if key not in keys:
            raise InputError(f"{path}: tensor {key!r} is missing")
        t = f.get_tensor(key)
        if t.shape != buf.shape or t.dtype != buf.dtype:
            raise InputError(f"{path}: tensor {key!r} is {t.dtype} {tuple(t.shape)}, but layer "
                             f"{name!r} needs {buf.dtype} {tuple(buf.shape)}")
        buf.copy_(t)
    if int4:  # repacked a block of rows at a time: the int32 values of all would be 8 B/weight
        q.weight = torch.cat([torch.ops.aten._convert_weight_to_int4pack_for_cpu(
            _unpack_nibbles(q.nibbles[s:s + ROWS]), 1) for s in range(0, q.out_features, ROWS)])
    assert aligned(q.weight) is q.weight, "buffers made by torch.empty are aligned"
    return q


def load_quantized(model: nn.Module, path: str | Path,
                   fingerprint_key: str | None = None) -> list[str]:
    """Replace the Linear layers named in `path` (from :func:`save_quantized`) by their WOQ
    versions; returns the names replaced. All or nothing: every layer and tensor is checked
    against `model` (and the file's fingerprint against `fingerprint_key`, if given) before
    the first layer is replaced; a mismatch raises InputError naming the file.

    >>> load_quantized(model, "llama-int8.safetensors")   # doctest: +SKIP
    """
    from safetensors import safe_open

    new = {}
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if "fastpipes_woq" not in meta:
                raise InputError(f"{path} is not a fastpipes quantized-weight file "
                                 "(no 'fastpipes_woq' metadata); write one with save_quantized()")
            if meta.get("format", "fastpipes-woq/1") != FILE_FORMAT:
                raise InputError(f"{path} has layout {meta.get('format', 'fastpipes-woq/1')!r}; "
                                 f"this fastpipes reads {FILE_FORMAT!r}: quantize again")
            if fingerprint_key is not None and meta.get("fingerprint") != fingerprint_key:
                raise InputError(f"{path} was written for other weights or settings (fingerprint "
                                 f"{meta.get('fingerprint')!r}, this model {fingerprint_key!r})")
            why = content_problem(f.keys(), f.get_tensor, meta.get("content_sha256"))
            if why:  # bytes damaged on disk with the header intact, or no hash to tell
                raise InputError(f"{path} {why}: quantize again")
            keys = set(f.keys())
            for name, info in json.loads(meta["fastpipes_woq"]).items():
                try:
                    old = model.get_submodule(name)
                except AttributeError:
                    old = None
                if type(old) is not nn.Linear or (old.in_features, old.out_features) != (
                        info["in"], info["out"]):
                    raise InputError(f"{path}: layer {name!r} does not match the model (file "
                                     f"has Linear {info['in']}->{info['out']}, model has {old!r})")
                try:
                    new[name] = _read_layer(f, keys, path, name, info)
                except (KeyError, TypeError, ValueError) as e:
                    raise InputError(f"{path}: layer {name!r} has a bad description "
                                     f"{info!r} ({e})") from e
    except InputError:
        raise
    except Exception as e:  # safetensors' own errors: not a safetensors file, truncated...
        raise InputError(f"{path} could not be read as a safetensors file of quantized "
                         f"weights: {type(e).__name__}: {e}") from e
    for name, q in new.items():
        _set_module(model, name, q)
    return list(new)


def cache_fingerprint(path: str | Path) -> str:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return (f.metadata() or {}).get("fingerprint", "")


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
        if at_load(ctx, comp, model, dtype, cfg.group_size, act):
            done += 1
            continue
        targeted = select_linears(model, cfg)
        skipped = kernel_skips(targeted, dtype)
        linears = {n: m for n, m in targeted.items() if n not in skipped}
        any_skipped |= bool(skipped)
        if skipped:
            ctx.warn(f"{comp}: {len(skipped)} Linear layer(s) left in FP32, the {dtype} kernel "
                     f"cannot take them: " + _names(f"{n} ({why})" for n, why in skipped.items()))
        if not linears:
            ctx.change(comp, "no Linear layer matched targets/exclude/min_features: left as is"
                       if not skipped else f"none of the {len(skipped)} targeted Linear layers "
                       f"fits the {dtype} kernel: left as is")
            continue
        before = sum(_bytes(m.weight) + _bytes(m.bias) for m in linears.values())
        key = fingerprint(linears, dtype, cfg.group_size, act)
        cache = Path(cfg.cache_dir) / f"{comp}-{dtype}-{key}.safetensors" if cfg.cache_dir else None
        # a weight shared with a layer that stays (a tied lm_head) is not the layer's to release
        refs = Counter(id(t) for m in model.modules() for t in m.parameters(recurse=False))
        if cache is not None and cache.exists() and _from_cache(ctx, comp, model, cache, key,
                                                                list(linears)):
            how = f"loaded from {cache}"
            _release(ctx, linears.values(), refs)
        else:
            for name, lin in linears.items():
                q = quantize_linear(lin, dtype, cfg.group_size, act, keep_nibbles=cache is not None)
                _set_module(model, name, q)
                _release(ctx, [lin], refs)  # low_memory: the FP32 original leaves memory now
            how = "quantized"
            if cache is not None:
                try:
                    save_quantized(model, cache, key)
                    how += f", saved to {cache}"
                except OSError as e:  # the quantized model is fine; only the cache is lost
                    ctx.warn(f"{comp}: could not save quantized weights to {cache} ({e}); "
                             "the next start quantizes again")
        quantized = {n: model.get_submodule(n) for n in linears}
        padded = {n: (q.in_features, q.k_padded) for n, q in quantized.items()
                  if getattr(q, "k_padded", q.in_features) != q.in_features}
        after = sum(_bytes(b) for q in quantized.values() for b in q.buffers())
        what = ("int8 weights + per-row int8 activations (dynamic W8A8)" if dynamic else
                 f"{dtype} weight-only" + (f" (group {cfg.group_size})" if dtype == "int4" else "")
                 + f", {act} activations")
        line = (f"{len(linears)} Linear -> {what}; weights {before / 2**20:.1f} MiB -> "
                f"{after / 2**20:.1f} MiB ({how})")
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
        done += 1
    if not done:
        raise SkipPass("no Linear layer matched in any component" + (
            f"; the {dtype} kernel cannot take the targeted ones (see warnings)"
            if any_skipped else ""))
