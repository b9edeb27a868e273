"""Per-call Python overhead of the precision wrappers at tiny shapes (where it matters most).

    PYTHONPATH=$PWD python benchmarks/generic_passes_overhead.py

Compares, on a 2-Linear + LayerNorm model at batch 1 (16 features), the best-of-N
microseconds per call of: FP32 eager; torch.autocast written by hand around the call
(plus .float() on the output, as fastpipes does);
fastpipes precision autocast (adds: output cast back to FP32); fastpipes precision cast
(weights in bf16; adds: input cast, output cast). One thread, so the numbers measure
Python/dispatch overhead rather than GEMM speed. Not imported by the package or tests.
"""
from __future__ import annotations

import time

import torch
import torch.nn as nn

import fastpipes


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 16), nn.LayerNorm(16), nn.Linear(16, 16)).eval()


def us_per_call(fn, x, calls=5000, repeats=9) -> float:
    with torch.no_grad():
        for _ in range(500):
            fn(x)
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            for _ in range(calls):
                fn(x)
            best = min(best, (time.perf_counter() - t) / calls * 1e6)
    return best


def main() -> None:
    torch.set_num_threads(1)
    x = torch.randn(1, 16)
    eager = model()

    def by_hand(x, m=model()):  # what a user would write for the same FP32-in, FP32-out call
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = m(x)
        return y.float()

    auto, cast = model(), model()
    fastpipes.accelerate(auto, {"precision": {"mode": "autocast"}})
    fastpipes.accelerate(cast, {"precision": {"mode": "cast"}})
    rows = [("fp32 eager", eager), ("torch.autocast by hand + .float()", by_hand),
            ("fastpipes precision autocast", auto), ("fastpipes precision cast", cast)]
    for round_ in range(2):  # two interleaved rounds: load on a shared machine drifts
        for label, fn in rows:
            print(f"round {round_}: {label:36s} {us_per_call(fn, x):7.1f} us/call")


if __name__ == "__main__":
    main()
