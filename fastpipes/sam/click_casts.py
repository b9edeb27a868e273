"""Per-click weight casts: how many times a click re-casts one of the model's weights.

A decoder under autocast keeps FP32 weights and casts each one to BF16 on every call (at
tiny shapes those casts and BF16's slower small GEMMs make a click slower than FP32 eager,
docs/sam.md); a decoder whose weights were cast once (precision mode ``cast``) or folded
by a frozen compile makes none. Counted by a dispatch mode below autocast, so the casts
autocast inserts are seen; a correctness measure, not a timing.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_CASTS = (torch.ops.aten._to_copy.default, torch.ops.aten.to.dtype, torch.ops.aten.to.dtype_layout)


class _CastCounter(TorchDispatchMode):
    def __init__(self, weights: set[int]):
        super().__init__()
        self.weights, self.count = weights, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in _CASTS and args and isinstance(args[0], torch.Tensor) \
                and args[0].data_ptr() in self.weights:
            self.count += 1
        return func(*args, **(kwargs or {}))


def weight_casts_per_call(module: torch.nn.Module, call: Callable[[], Any]) -> int:
    """How many casts of `module`'s parameters (by storage) one `call()` performs."""
    weights = {p.data_ptr() for p in module.parameters() if p.numel()}
    with _CastCounter(weights) as counter:
        call()
    return counter.count
