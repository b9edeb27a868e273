"""Safetensors files read with plain reads: one tensor at a time, straight into its final
(aligned) memory, with no memory map.

safetensors' own ``safe_open`` maps the file: every page a read touches counts in the
process's RSS until the file is closed, so reading a 1 GB file of quantized weights through
it adds up to 1 GB to the peak on top of the tensors it was copied into. Here the header
(8 bytes of length, then JSON) says where each tensor's bytes lie, and :meth:`read_into`
copies them into a tensor the caller allocated with ``readinto``: only the destination
grows the RSS.

>>> f = TensorFile("model.safetensors")          # doctest: +SKIP
>>> w = f.read("lm_head.weight")                 # doctest: +SKIP
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from fastpipes.errors import InputError

DTYPES = {"F64": torch.float64, "F32": torch.float32, "BF16": torch.bfloat16,
          "F16": torch.float16, "I64": torch.int64, "I32": torch.int32, "I16": torch.int16,
          "U8": torch.uint8, "I8": torch.int8, "BOOL": torch.bool}


def read_header(path: Path) -> tuple[dict, int]:
    """(the JSON header, the offset where tensor data starts) of the safetensors file `path`;
    InputError when it is not one (too short, a header that is not a JSON object)."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        size = path.stat().st_size
        if not 2 <= n <= size - 8:
            raise InputError(f"{path} is not a safetensors file (header length {n}, file "
                             f"size {size})")
        try:
            header = json.loads(f.read(n))
        except (ValueError, UnicodeDecodeError) as e:
            raise InputError(f"{path} is not a safetensors file (header: {e})") from e
    if not isinstance(header, dict):
        raise InputError(f"{path} is not a safetensors file (header is not a JSON object)")
    return header, 8 + n


class TensorFile:
    """One safetensors file: its tensors' (dtype, shape, byte range) and its metadata."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        header, start = read_header(self.path)
        self.metadata: dict[str, str] = header.pop("__metadata__", None) or {}
        self.entries: dict[str, tuple[str, list[int], int, int]] = {}
        size = self.path.stat().st_size
        for name, e in header.items():
            try:
                lo, hi = (start + int(o) for o in e["data_offsets"])
                entry = (str(e["dtype"]), [int(s) for s in e["shape"]], lo, hi)
            except (KeyError, TypeError, ValueError) as err:
                raise InputError(f"{self.path}: tensor {name!r} has a bad header entry "
                                 f"{e!r}") from err
            if not start <= lo <= hi <= size:
                raise InputError(f"{self.path} is truncated: tensor {name!r} lies at bytes "
                                 f"{lo}-{hi}, the file has {size}")
            self.entries[name] = entry

    def keys(self) -> list[str]:
        return list(self.entries)

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def describe(self, name: str) -> tuple[torch.dtype | None, tuple[int, ...]]:
        """(torch dtype or None if not one this reader knows, shape) of tensor `name`."""
        dt, shape, _, _ = self.entries[name]
        return DTYPES.get(dt), tuple(shape)

    def read_into(self, name: str, out: torch.Tensor, f=None) -> torch.Tensor:
        """Copy tensor `name` into `out` (contiguous, of its dtype and shape: else
        InputError naming both); `f`: this file, already open for reading."""
        dt, shape, lo, hi = self.entries[name]
        if DTYPES.get(dt) != out.dtype or tuple(shape) != tuple(out.shape):
            raise InputError(f"{self.path}: tensor {name!r} is {dt} {tuple(shape)}, but "
                             f"{out.dtype} {tuple(out.shape)} is needed")
        assert out.is_contiguous(), "read_into fills contiguous tensors"
        if out.numel() * out.element_size() != hi - lo:
            raise InputError(f"{self.path}: tensor {name!r} is described as {dt} {shape} but "
                             f"holds {hi - lo} bytes")
        if f is None:
            with open(self.path, "rb") as fh:
                return self.read_into(name, out, fh)
        f.seek(lo)
        got = f.readinto(memoryview(out.view(-1).view(torch.uint8).numpy())) if hi > lo else 0
        if got != hi - lo:
            raise InputError(f"{self.path} is truncated: tensor {name!r} needs {hi - lo} "
                             f"bytes, {got} were there")
        return out

    def read(self, name: str, f=None) -> torch.Tensor:
        """Tensor `name` in fresh memory."""
        dtype, shape = self.describe(name)
        if dtype is None:
            raise InputError(f"{self.path}: tensor {name!r} has dtype {self.entries[name][0]}; "
                             f"this reader reads {', '.join(DTYPES)}")
        return self.read_into(name, torch.empty(shape, dtype=dtype), f)


__all__ = ["TensorFile", "read_header", "DTYPES"]
