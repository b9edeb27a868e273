"""Capture and restore everything a pass may change, for an all-or-nothing accelerate().

A snapshot holds, for every module of every component: a shallow copy of its
``__dict__`` (submodule / parameter / buffer tables, instance attributes such as a wrapped
``forward``, diffusers ``processor``, ``_compiled_call_impl``), and each parameter's and
buffer's tensor object. Restoring puts those objects back, so dtype casts, layout changes,
module swaps, wrapped methods and attribute edits are all undone, without copying weights.
Plain objects named by the adapter (the pipeline, model configs) get their ``__dict__``
restored the same way.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Iterable

import torch
import torch.nn as nn


class Snapshot:
    def __init__(self, modules: Iterable[nn.Module], objects: Iterable[Any] = ()):
        self._modules: list[tuple[nn.Module, dict, list]] = []
        self._objects: list[tuple[Any, dict]] = []
        seen: set[int] = set()
        for root in modules:
            for m in root.modules():
                if id(m) in seen:
                    continue
                seen.add(id(m))
                # copy plain dicts too (tables, hook dicts) so in-place edits are undone
                state = {k: (type(v)(v) if type(v) in (dict, OrderedDict) else v)
                         for k, v in m.__dict__.items()}
                tensors = [(t, t.data) for t in list(m._parameters.values()) + list(m._buffers.values())
                           if t is not None]
                self._modules.append((m, state, tensors))
        for obj in objects:
            if id(obj) not in seen and hasattr(obj, "__dict__"):
                seen.add(id(obj))
                state = {k: (type(v)(v) if type(v) in (dict, OrderedDict) else v)
                         for k, v in obj.__dict__.items()}
                self._objects.append((obj, state))

    @torch.no_grad()
    def restore(self) -> None:
        for obj, state in self._objects:
            obj.__dict__.clear()
            obj.__dict__.update(state)
        for m, state, tensors in self._modules:
            m.__dict__.clear()
            m.__dict__.update(state)
            for t, data in tensors:
                t.data = data  # same storage, dtype and strides as before
