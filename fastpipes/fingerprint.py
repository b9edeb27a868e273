"""What a cached result depends on: the machine, and the model's structure; and the hash
that tells whether a cached file's data is still what was written.

Both the compile-artifact cache (passes/compile.py) and recipe="auto"'s decision cache
(auto.py) key their entries on these, so a different CPU, torch or model never reuses
another's artifacts or decisions.

>>> sorted(machine_fingerprint(detect()))   # doctest: +SKIP
['cpu', 'cuda', 'isa', 'torch']
"""
from __future__ import annotations

import hashlib
from typing import Any, Callable, Iterable

import torch


def machine_fingerprint(hardware: Any) -> dict:
    """torch version, CPU model and ISA flags, GPUs (`hardware`: a hardware.MachineInfo)."""
    return {"torch": torch.__version__, "cpu": hardware.cpu_model,
            "isa": sorted(k for k, v in hardware.isa.items() if v), "cuda": hardware.cuda_devices}


def structure_signature(modules: dict[str, torch.nn.Module]) -> list:
    """Module classes and parameter shapes/dtypes: what the model *is*, not its values."""
    sig = []
    for name, m in modules.items():
        params = [(n, list(p.shape), str(p.dtype)) for n, p in m.named_parameters()]
        classes = sorted({type(x).__qualname__ for x in m.modules()})
        sig.append([name, type(m).__qualname__, classes, params])
    return sig


def shapes(obj: Any) -> Any:
    """Shapes and dtypes of the tensors (and numpy arrays) in a nested input; plain values as
    their repr, other objects as their type name."""
    if isinstance(obj, torch.Tensor):
        return [list(obj.shape), str(obj.dtype)]
    if isinstance(obj, (list, tuple)):
        return [shapes(o) for o in obj]
    if isinstance(obj, dict):
        return {str(k): shapes(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if hasattr(obj, "__dataclass_fields__"):
        return {k: shapes(getattr(obj, k)) for k in obj.__dataclass_fields__}
    if hasattr(obj, "shape"):  # numpy arrays (SAM images)
        return [list(obj.shape), str(getattr(obj, "dtype", ""))]
    return repr(obj) if isinstance(obj, (int, float, str, bool, type(None))) else type(obj).__name__


def content_hash(names: Iterable[str], get: Callable[[str], torch.Tensor]) -> str:
    """sha256 of (name, dtype, shape, bytes) of each tensor `get(name)`, in name order, one
    tensor in memory at a time: a cache file's header says what it holds, this checks that
    its data is still what was written (a flipped byte on disk).

    >>> t = {"w": torch.ones(2, dtype=torch.int8)}
    >>> content_hash(t, t.get) == content_hash(["w"], lambda n: torch.ones(2, dtype=torch.int8))
    True
    """
    h = hashlib.sha256()
    for name in sorted(names):
        t = get(name).detach().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


def content_problem(names: Iterable[str], get: Callable[[str], torch.Tensor],
                    recorded: str | None) -> str | None:
    """Why tensors `get(name)` do not hash to `recorded` (:func:`content_hash`), or None."""
    if not recorded:
        return "has no content hash (an older fastpipes wrote it), so damage cannot be told"
    if content_hash(names, get) != recorded:
        return "has tensor data that does not match the content hash in its header (damaged)"
    return None
