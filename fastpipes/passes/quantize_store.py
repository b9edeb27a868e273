"""The quantized-weight cache file of the quantize pass (and of layer-by-layer loading):
save_quantized / load_quantized in safetensors with a fingerprint and a sha256 of the tensor
data, so a file whose bytes changed on disk is dropped, never used. Layers are stored as the
kernels run them (int4 packed) and read back with plain reads into their own buffers."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
import torch.nn as nn

from fastpipes.errors import InputError
from fastpipes.files import atomic_file
from fastpipes.fingerprint import content_hash, content_problem
from fastpipes.kernels.woq import (INT4_GROUP_SIZES, Int4WeightOnlyLinear, Int8DynamicLinear,
                                   Int8WeightOnlyLinear, aligned, int4_packing)
from fastpipes.tensorfile import TensorFile, read_header


def _set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)


# the layout of saved files (2: K padded to 16 for int8, to the group size for int4; 3: int4
# in the kernel's packed layout, recorded as int4_packing)
FILE_FORMAT = "fastpipes-woq/3"


def fingerprint(linears: dict[str, nn.Linear], dtype: str, group_size: int, act: str) -> str:
    """A cheap key of which layers, at which shapes, with which weights (1024 sampled values
    per layer, so a different checkpoint or seed gets a different cache file)."""
    packing = f"/{int4_packing()}" if dtype == "int4" else ""  # a file per packed layout
    h = hashlib.sha256(f"{FILE_FORMAT}/{dtype}/{group_size}/{act}/{torch.__version__}"
                       f"{packing}".encode())
    for name, m in linears.items():
        w = m.weight.detach().reshape(-1)
        sample = w[:: max(1, w.numel() // 1024)][:1024].float().contiguous()
        h.update(f"{name}:{tuple(m.weight.shape)}:{m.bias is not None}".encode())
        h.update(sample.numpy().tobytes())
    return h.hexdigest()[:16]


# ---- save / load ------------------------------------------------------------------------

def _parts(m: nn.Module) -> tuple[str, ...]:
    """The tensors a quantized layer is saved as: its buffers, as the kernel reads them."""
    if isinstance(m, Int4WeightOnlyLinear):
        return ("weight", "scales_and_zeros", "bias")
    return ("weight", "scales", "bias")


def save_quantized(model: nn.Module, path: str | Path, fingerprint_key: str = "") -> int:
    """Write every WOQ layer of `model` to a safetensors file; returns how many.

    Every layer is stored as the kernel runs it: int4 weights in the CPU kernel's packed
    layout, so a load reads them into place and packs nothing. That layout depends on the
    torch version and the ISA the kernel dispatches to: the file records
    :func:`~fastpipes.kernels.woq.int4_packing`, and a process whose packing differs
    refuses it (quantize again). The file appears atomically (written beside it, then
    renamed), so a reader never sees half of it.

    >>> save_quantized(model, "llama-int8.safetensors")   # doctest: +SKIP
    """
    from safetensors.torch import save_file

    tensors, meta = {}, {}
    for name, m in model.named_modules():
        if not isinstance(m, (Int8WeightOnlyLinear, Int8DynamicLinear, Int4WeightOnlyLinear)):
            continue
        for part in _parts(m):
            if getattr(m, part) is not None:
                tensors[f"{name}.{part}"] = getattr(m, part)
        kind = {Int8WeightOnlyLinear: "int8", Int8DynamicLinear: "int8_dynamic"}.get(type(m), "int4")
        meta[name] = {"kind": kind,
                      "in": m.in_features, "out": m.out_features,
                      "group_size": getattr(m, "group_size", 0),
                      "act_dtype": str(m.act_dtype).removeprefix("torch.")}
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    metadata = {"fastpipes_woq": json.dumps(meta), "format": FILE_FORMAT,
                "fingerprint": fingerprint_key,
                "content_sha256": content_hash(tensors, tensors.get)}
    if any(info["kind"] == "int4" for info in meta.values()):
        metadata["int4_packing"] = int4_packing()
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


def _check_file(path, meta: dict, fingerprint_key: str | None) -> dict:
    """The layers a quantized-weight file's metadata describes, once it is known to be one
    this process may read (format, fingerprint, int4 packing); its content hash is checked
    once the tensors are read (_read_layers)."""
    if "fastpipes_woq" not in meta:
        raise InputError(f"{path} is not a fastpipes quantized-weight file "
                         "(no 'fastpipes_woq' metadata); write one with save_quantized()")
    if meta.get("format", "fastpipes-woq/1") != FILE_FORMAT:
        raise InputError(f"{path} has layout {meta.get('format', 'fastpipes-woq/1')!r}; "
                         f"this fastpipes reads {FILE_FORMAT!r}: quantize again")
    if fingerprint_key is not None and meta.get("fingerprint") != fingerprint_key:
        raise InputError(f"{path} was written for other weights or settings (fingerprint "
                         f"{meta.get('fingerprint')!r}, this model {fingerprint_key!r})")
    try:
        layers = json.loads(meta["fastpipes_woq"])
        int4 = any(info["kind"] == "int4" for info in layers.values())
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise InputError(f"{path} has a bad layer description ({e})") from e
    if int4 and meta.get("int4_packing") != int4_packing():
        raise InputError(f"{path} holds int4 weights packed by {meta.get('int4_packing')!r}; "
                         f"this process packs them as {int4_packing()!r} (another torch or CPU "
                         "kernel): quantize again")
    return layers


def _read_layer(tf: TensorFile, fh, name: str, info: dict) -> nn.Module:
    """One layer, its tensors read with plain reads straight into the layer's own (aligned)
    buffers, each checked first against the shape and dtype the layer needs: nothing of the
    file is mapped, and no copy of a tensor exists beside the layer's."""
    q = _empty_layer(info, f"{name}.bias" in tf)
    for part in _parts(q):
        buf, key = getattr(q, part), f"{name}.{part}"
        if buf is None:
            continue
        if key not in tf:
            raise InputError(f"{tf.path}: tensor {key!r} is missing")
        dtype, shape = tf.describe(key)
        if shape != tuple(buf.shape) or dtype != buf.dtype:
            raise InputError(f"{tf.path}: tensor {key!r} is {dtype or tf.entries[key][0]} "
                             f"{shape}, but layer {name!r} needs {buf.dtype} "
                             f"{tuple(buf.shape)}")
        tf.read_into(key, buf, fh)
    assert aligned(q.weight) is q.weight, "buffers made by torch.empty are aligned"
    return q


def _check_target(model: nn.Module, path, name: str, info: dict) -> None:
    try:
        old = model.get_submodule(name)
    except AttributeError:
        old = None
    if type(old) is not nn.Linear or (old.in_features, old.out_features) != (
            info["in"], info["out"]):
        raise InputError(f"{path}: layer {name!r} does not match the model (file "
                         f"has Linear {info['in']}->{info['out']}, model has {old!r})")


def _read_layers(tf: TensorFile, layers: dict, model: nn.Module) -> dict[str, nn.Module]:
    """Every layer of the file, layer by layer, then the content hash over the tensors
    just read (in place: the file is not read twice)."""
    new, read = {}, {}
    with open(tf.path, "rb") as fh:
        for name, info in layers.items():
            _check_target(model, tf.path, name, info)
            try:
                q = new[name] = _read_layer(tf, fh, name, info)
            except (KeyError, TypeError, ValueError) as e:
                raise InputError(f"{tf.path}: layer {name!r} has a bad description "
                                 f"{info!r} ({e})") from e
            read.update({f"{name}.{p}": getattr(q, p) for p in _parts(q)
                         if getattr(q, p) is not None})
        why = content_problem(tf.keys(), lambda k: read[k] if k in read else tf.read(k, fh),
                              tf.metadata.get("content_sha256"))
    if why:  # bytes damaged on disk with the header intact
        raise InputError(f"{tf.path} {why}: quantize again")
    return new


def load_quantized(model: nn.Module, path: str | Path,
                   fingerprint_key: str | None = None) -> list[str]:
    """Replace the Linear layers named in `path` (from :func:`save_quantized`) by their WOQ
    versions; returns the names replaced. All or nothing: every layer and tensor is checked
    against `model` (and the file's fingerprint against `fingerprint_key`, if given) before
    the first layer is replaced; a mismatch raises InputError naming the file.

    The file is read with plain reads, one tensor at a time into the layer that keeps it
    (no memory map whose pages would count in the RSS while it is open).

    >>> load_quantized(model, "llama-int8.safetensors")   # doctest: +SKIP
    """
    try:
        tf = TensorFile(path)
        if not tf.entries:
            raise InputError("it holds no tensors")
    except InputError as e:
        raise InputError(f"{path} could not be read as a safetensors file of quantized "
                         f"weights: {e}") from e
    layers = _check_file(path, tf.metadata, fingerprint_key)
    new = _read_layers(tf, layers, model)
    for name, q in new.items():
        _set_module(model, name, q)
    return list(new)


def cache_fingerprint(path: str | Path) -> str:
    return (read_header(Path(path))[0].get("__metadata__") or {}).get("fingerprint", "")
