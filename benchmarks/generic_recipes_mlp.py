"""FP32 eager vs the generic recipes on a 12-layer MLP (1024 wide, batch 64), CPU.

    PYTHONPATH=$PWD python benchmarks/generic_recipes_mlp.py

Median of 30 calls after warm-up; first call (compile) timed apart; max error relative
to the largest FP32 output. Not imported by the package or tests.
"""
import time, statistics, torch, torch.nn as nn, fastpipes
from fastpipes.passes.compile import compile_time_s
torch.manual_seed(0)
def make():
    torch.manual_seed(0)
    return nn.Sequential(*[m for _ in range(4) for m in (nn.Linear(1024, 1024), nn.LayerNorm(1024), nn.GELU())]).eval()
x = torch.randn(64, 1024)
def lat(m, n=30):
    ts = []
    with torch.no_grad():
        for _ in range(n):
            t = time.perf_counter(); m(x); ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1e3
base = make()
with torch.no_grad(): ref = base(x)
for _ in range(3): lat(base, 5)
fp32 = lat(base)
print(f"fp32 eager: {fp32:.2f} ms")
for recipe in ["generic_fp32_fast", "generic_bf16", {"precision": {"mode": "cast", "keep_fp32": ["*1", "*4", "*7", "*10"]}}]:
    m = make()
    rep = fastpipes.accelerate(m, recipe)
    t = time.perf_counter()
    with torch.no_grad(): y = m(x)
    first = time.perf_counter() - t
    ms = lat(m)
    err = ((y.float() - ref).abs().max() / ref.abs().max()).item()
    print(f"{str(recipe)[:40]:40s} {ms:7.2f} ms  speedup {fp32/ms:.2f}x  first call {first:.1f}s "
          f"(compile_time_s={compile_time_s(m)})  max rel err {err:.2e}  applied={rep.applied}")
