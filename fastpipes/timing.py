"""The one timer: wall-clock seconds of a call, with the device's queued work included.

On a GPU a call returns once its kernels are launched, not run: timing it without a
synchronize measures launches. :func:`timed` waits for the device before starting the clock
and again before reading it, so it times the work; on the CPU the wait is nothing.

>>> secs, out = timed(lambda: sum(range(1000)), "cpu")
>>> out, secs >= 0
(499500, True)
"""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import torch


def synchronize(device: str | torch.device) -> None:
    """Wait until the work queued on `device` has run (CUDA); a no-op on the CPU."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: str | torch.device = "cpu") -> tuple[float, Any]:
    """(seconds `fn()` took including its work on `device`, what it returned)."""
    synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    synchronize(device)
    return time.perf_counter() - t0, out


def median_time(fn: Callable[[], Any], iters: int,
                device: str | torch.device = "cpu") -> tuple[float, Any]:
    """(median seconds over `iters` timed calls after one warm-up call, last output)."""
    _, out = timed(fn, device)  # warm-up: compiles, fills caches
    times = []
    for _ in range(iters):
        secs, out = timed(fn, device)
        times.append(secs)
    return statistics.median(times), out
