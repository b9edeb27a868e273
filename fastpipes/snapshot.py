"""Capture and restore everything a pass may change, for an all-or-nothing accelerate().

A snapshot holds, for every module of every component: a shallow copy of its
``__dict__`` (submodule / parameter / buffer tables, instance attributes such as a wrapped
``forward``, diffusers ``processor``, ``_compiled_call_impl``), and each parameter's and
buffer's tensor object. Restoring puts those objects back, so dtype casts, layout changes,
module swaps, wrapped methods and attribute edits are all undone, without copying weights.
Plain objects named by the adapter (the pipeline, model configs) get their ``__dict__``
restored the same way.

Keeping the originals costs memory while accelerate() runs: a pass that replaces weights
(a BF16 cast, int8 quantization) holds the original and its replacement at once. With
:meth:`Snapshot.spill`, an original that the pipeline no longer uses is written to a
private temporary file and dropped from memory; restoring reads it back.
"""
from __future__ import annotations

import shutil
import tempfile
import weakref
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
import torch.nn as nn


def _copy_state(obj: Any) -> dict:
    # copy plain dicts too (tables, hook dicts) so in-place edits are undone
    return {k: (type(v)(v) if type(v) in (dict, OrderedDict) else v) for k, v in obj.__dict__.items()}


class _Spilled:
    """Where the bytes of a spilled original are, and how to rebuild the tensor."""

    def __init__(self, offset: int, data: torch.Tensor):
        self.offset, self.nbytes = offset, data.numel() * data.element_size()
        self.dtype, self.shape, self.stride = data.dtype, tuple(data.shape), data.stride()

    def load(self, path: Path) -> torch.Tensor:
        raw = np.fromfile(path, dtype=np.uint8, count=self.nbytes, offset=self.offset)
        flat = torch.from_numpy(raw).view(self.dtype)
        out = torch.empty_strided(self.shape, self.stride, dtype=self.dtype)
        out.copy_(flat.view(self.shape))  # written in logical (row-major) order
        return out


class Snapshot:
    def __init__(self, modules: Iterable[nn.Module], objects: Iterable[Any] = ()):
        self._modules: list[tuple[nn.Module, dict, list]] = []
        self._objects: list[tuple[Any, dict]] = []
        self._originals: dict[int, list] = {}  # id(tensor object) -> its [tensor, data] entry
        self._spill_dir: Path | None = None
        seen: set[int] = set()
        for root in modules:
            for m in root.modules():
                if id(m) in seen:
                    continue
                seen.add(id(m))
                tensors = [[t, t.data] for t in list(m._parameters.values()) + list(m._buffers.values())
                           if t is not None]
                for entry in tensors:
                    self._originals.setdefault(id(entry[0]), entry)
                self._modules.append((m, _copy_state(m), tensors))
        for obj in objects:
            if id(obj) not in seen and hasattr(obj, "__dict__"):
                seen.add(id(obj))
                self._objects.append((obj, _copy_state(obj)))

    @property
    def spilled_bytes(self) -> int:
        return sum(e[1].nbytes for e in self._originals.values() if isinstance(e[1], _Spilled))

    def spill(self, t: torch.Tensor) -> int:
        """Keep the original of `t` (a parameter or buffer this snapshot captured) on disk
        instead of in memory; returns the bytes moved (0 if `t` was not captured or is
        already spilled). Only for originals the pipeline no longer reads: either `t` was
        given new data (a cast), or `t` itself left the pipeline (its layer was replaced),
        in which case `t` is emptied too."""
        entry = self._originals.get(id(t))
        if entry is None or isinstance(entry[1], _Spilled):
            return 0
        data = entry[1]
        if data.device.type != "cpu":  # device memory is not what low_memory saves
            return 0
        if self._spill_dir is None:
            self._spill_dir = Path(tempfile.mkdtemp(prefix="fastpipes-undo-"))  # 0700
            weakref.finalize(self, shutil.rmtree, str(self._spill_dir), True)
        path = self._spill_dir / "originals.bin"
        offset = path.stat().st_size if path.exists() else 0
        record = _Spilled(offset, data)
        with open(path, "ab") as f:
            # the logical (row-major) element order, whatever the strides
            data.detach().contiguous().view(-1).view(torch.uint8).numpy().tofile(f)
        if t.data.data_ptr() == data.data_ptr():  # `t` still holds it: it left the pipeline
            t.data = torch.empty(0, dtype=data.dtype)
        entry[1] = record
        return record.nbytes

    @torch.no_grad()
    def restore(self) -> None:
        for obj, state in self._objects:
            obj.__dict__.clear()
            obj.__dict__.update(state)
        path = self._spill_dir / "originals.bin" if self._spill_dir else None
        for m, state, tensors in self._modules:
            m.__dict__.clear()
            m.__dict__.update(state)
            for entry in tensors:
                t, data = entry
                if isinstance(data, _Spilled):
                    data = entry[1] = data.load(path)
                t.data = data  # same storage, dtype and strides as before

    def discard(self) -> None:
        """Drop what only a restore would need (the spill file); the snapshot is spent."""
        self._originals.clear()
        self._modules.clear()
        self._objects.clear()
        if self._spill_dir is not None and self._spill_dir.exists():
            shutil.rmtree(self._spill_dir, ignore_errors=True)

