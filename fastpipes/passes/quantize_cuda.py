"""The quantize pass on a CUDA component: weight-only int8 / int4 on the CUDA kernels of
fastpipes.kernels.woq_cuda (the CPU path is quantize.py's own).

What differs from the CPU: activations are BF16 (the CUDA int4 kernel takes nothing else,
and BF16 is native on every GPU these kernels run on); ``mode: dynamic`` and ``cache_dir``
are CPU features (refused / ignored with a warning); a kernel this torch or GPU cannot run
is refused before any layer is replaced, with the reason (:func:`woq_cuda.unavailable`).
"""
from __future__ import annotations

from collections import Counter
from typing import Any

import torch.nn as nn

from fastpipes.errors import PassError
from fastpipes.kernels.woq_cuda import INT4_CUDA_GROUP_SIZES, CudaInt4WeightOnlyLinear, quantize_linear_cuda, unavailable
from fastpipes.passes.base import PassContext


def _set(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)


def _nbytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def refusal(cfg: Any, device: str) -> str:
    """Why this quantize config cannot run on the CUDA `device` ('' when it can)."""
    mode = getattr(cfg.mode, "value", cfg.mode)
    dtype = getattr(cfg.dtype, "value", cfg.dtype)
    act = getattr(cfg.act_dtype, "value", cfg.act_dtype)
    if mode != "weight_only":
        return (f"mode {mode} (W8A8 dynamic) is a CPU recipe feature; on CUDA use mode: "
                "weight_only (int8 or int4)")
    if act == "float32":
        return "act_dtype float32 is a CPU option; the CUDA kernels run BF16 activations (auto)"
    if dtype == "int4" and cfg.group_size not in INT4_CUDA_GROUP_SIZES:
        return (f"group_size {cfg.group_size} is not one the CUDA int4 kernel takes "
                f"({', '.join(map(str, INT4_CUDA_GROUP_SIZES))})")
    return unavailable(dtype, device)


def apply_cuda(ctx: PassContext, cfg: Any, comp: str, model: nn.Module,
               targeted: dict[str, nn.Linear], device: str) -> int:
    """Replace the `targeted` Linear layers of `model` (on `device`); 1 when done, 0 when
    nothing matched. PassError (the pipeline is restored) when the kernel cannot run here."""
    dtype = getattr(cfg.dtype, "value", cfg.dtype)
    if why := refusal(cfg, device):
        raise PassError("quantize", f"{comp} is on {device}: {why}")
    if cfg.cache_dir:
        ctx.warn(f"{comp}: cache_dir is not used on CUDA (quantizing on the GPU takes seconds)")
    skipped = {n: why for n, m in targeted.items()
               if dtype == "int4" and (why := CudaInt4WeightOnlyLinear.unsupported(m))}
    linears = {n: m for n, m in targeted.items() if n not in skipped}
    if skipped:
        ctx.warn(f"{comp}: {len(skipped)} Linear layer(s) left as they were, the CUDA {dtype} "
                 f"kernel cannot take them: " + ", ".join(f"{n} ({w})" for n, w in skipped.items()))
    if not linears:
        ctx.change(comp, "no Linear layer matched (or none fits the CUDA kernel): left as is")
        return 0
    refs = Counter(id(t) for m in model.modules() for t in m.parameters(recurse=False))
    before = sum(_nbytes(m) for m in linears.values())
    after = 0
    for name, lin in linears.items():
        q = quantize_linear_cuda(lin, dtype, cfg.group_size)
        _set(model, name, q)
        after += _nbytes(q)
        for t in (lin.weight, lin.bias):
            if t is not None and refs[id(t)] == 1:
                ctx.release(t)
    group = f" (group {cfg.group_size})" if dtype == "int4" else ""
    ctx.change(comp, f"{len(linears)} Linear -> CUDA {dtype} weight-only{group}, bfloat16 "
                     f"activations; weights {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB")
    ctx.report.extra.setdefault("quantize", {})[comp] = {
        "layers": len(linears), "bytes_before": before, "bytes_after": after, "dtype": dtype,
        "act_dtype": "bfloat16", "device": device, "skipped": dict(skipped)}
    return 1
