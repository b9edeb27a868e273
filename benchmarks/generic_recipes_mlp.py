"""FP32 eager vs the generic recipes on a 12-layer MLP (1024 wide, batch 64), CPU.

    PYTHONPATH=$PWD python benchmarks/generic_recipes_mlp.py [THREADS]

Median of 30 calls after warm-up; the first call (where compile happens) is timed apart;
error is the max absolute difference relative to the largest FP32 output. The FP32
baseline is measured before and after the recipes and the faster of the two is used, to
be fair on a shared machine. Not imported by the package or tests.
"""
from __future__ import annotations

import statistics
import sys
import time

import torch
import torch.nn as nn

import fastpipes
from fastpipes.passes.compile import compile_time_s

RECIPES = [
    "generic_fp32_fast",
    "generic_bf16",
    {"precision": {"mode": "cast", "keep_fp32": ["*1", "*4", "*7", "*10"]}},  # the LayerNorms
]


def make() -> nn.Module:
    torch.manual_seed(0)
    layers = [m for _ in range(4) for m in (nn.Linear(1024, 1024), nn.LayerNorm(1024), nn.GELU())]
    return nn.Sequential(*layers).eval()


def median_ms(model, x, calls=30) -> float:
    times = []
    with torch.no_grad():
        for _ in range(calls):
            t = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def main() -> None:
    if len(sys.argv) > 1:  # on a shared machine one thread gives steadier numbers
        torch.set_num_threads(int(sys.argv[1]))
    torch.manual_seed(1)
    x = torch.randn(64, 1024)  # x: [B, D]
    base = make()
    with torch.no_grad():
        ref = base(x)
        for _ in range(3):
            base(x)
    fp32_before = median_ms(base, x)
    rows = []
    for recipe in RECIPES:
        model = make()
        report = fastpipes.accelerate(model, recipe)
        t = time.perf_counter()
        with torch.no_grad():
            y = model(x)
        first_s = time.perf_counter() - t
        ms = median_ms(model, x)
        err = ((y.float() - ref).abs().max() / ref.abs().max()).item()
        rows.append((str(recipe)[:40], ms, first_s, compile_time_s(model), err, report.applied))
    fp32 = min(fp32_before, median_ms(base, x))
    print(f"threads {torch.get_num_threads()}; fp32 eager: {fp32:.2f} ms (before {fp32_before:.2f})")
    for name, ms, first_s, comp, err, applied in rows:
        print(f"{name:40s} {ms:7.2f} ms  {fp32 / ms:5.2f}x  first call {first_s:5.1f} s "
              f"(compile_time_s {comp if comp is None else round(comp, 1)})  "
              f"rel err {err:.1e}  applied {applied}")


if __name__ == "__main__":
    main()
