"""The quantized-weight cache file of the quantize pass (and of layer-by-layer loading):
save_quantized / load_quantized in safetensors with a fingerprint and a sha256 of the tensor
data, so a file whose bytes changed on disk is dropped, never used."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
import torch.nn as nn

from fastpipes.errors import InputError
from fastpipes.files import atomic_file
from fastpipes.fingerprint import content_hash, content_problem
from fastpipes.kernels.woq import (INT4_GROUP_SIZES, ROWS, Int4WeightOnlyLinear,
                                   Int8DynamicLinear, Int8WeightOnlyLinear, aligned)

def _set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)


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
    metadata = {"fastpipes_woq": json.dumps(meta), "format": FILE_FORMAT,
                "fingerprint": fingerprint_key,
                "content_sha256": content_hash(tensors, tensors.get)}
    atomic_file(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
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
