"""Machine limits measured in the run: a GEMM ceiling per compute precision, and copy bandwidth.

Rows of a benchmark report their achieved rate as a share of the ceiling of the precision
their class computes in (exact: FP32 GEMM; bf16 / fp16: that dtype's GEMM; int8: int8 x
int8 ``torch._int_mm``; int4 weight-only: its activations' dtype), or of the copy
bandwidth for memory-bound work. A low-precision ceiling is measured only where the
precision is native: BF16 on a CPU without AVX512-BF16 / AMX runs 100x or more slower
than FP32 and would only take minutes to say so.

>>> lim = measure_limits("cpu", quick=True)         # doctest: +SKIP
>>> lim.ceilings                                    # doctest: +SKIP
{'exact': 251.0, 'bf16': 1580.2, 'int8': 2012.7}
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import torch

from fastpipes.hardware import detect


@dataclass
class Limits:
    gemm_gflops: float  # FP32: best of a few n x n x n matmuls
    gemm_n: int
    bandwidth_gbps: float  # best of a few large copies: (read + write bytes) / time
    copy_mb: float
    device: str
    # precision class -> GEMM ceiling, GFLOP/s (GOP/s for int8); classes not native here absent
    ceilings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _best_time(fn, device: str, repeats: int) -> float:
    fn()  # warm-up: first call allocates and picks kernels
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def gemm_gflops(device: str = "cpu", n: int = 2048, repeats: int = 3,
                dtype: torch.dtype = torch.float32) -> float:
    """Best GEMM rate on `device` for an n x n x n matmul (2 n^3 FLOPs) in `dtype`; int8 is
    ``torch._int_mm`` (int8 x int8 -> int32), in GOP/s."""
    if dtype == torch.int8:
        a = torch.randint(-128, 127, (n, n), dtype=torch.int8, device=device)
        b = torch.randint(-128, 127, (n, n), dtype=torch.int8, device=device)
        t = _best_time(lambda: torch._int_mm(a, b), device, repeats)
    else:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        out = torch.empty(n, n, device=device, dtype=dtype)
        t = _best_time(lambda: torch.mm(a, b, out=out), device, repeats)
    return 2 * n**3 / t / 1e9


def bandwidth_gbps(device: str = "cpu", mb: float = 512, repeats: int = 3) -> float:
    """Best copy bandwidth: a `mb`-MB FP32 tensor copied into another (read + write)."""
    numel = int(mb * 2**20 / 4)
    src = torch.ones(numel, device=device)
    dst = torch.empty_like(src)
    t = _best_time(lambda: dst.copy_(src), device, repeats)
    return 2 * src.nbytes / t / 1e9


def _int8_ok(device: str) -> bool:
    """Whether int8 _int_mm runs here at a useful rate (a small, cheap probe first)."""
    try:
        return gemm_gflops(device, 256, 1, torch.int8) > 5.0
    except RuntimeError:  # no int8 GEMM kernel for this device / build
        return False


def measure_limits(device: str = "cpu", quick: bool = False) -> Limits:
    """FP32 GEMM, the native low-precision GEMMs and copy bandwidth; `quick` uses small
    sizes (tests, smoke runs: less accurate)."""
    if device.startswith("cuda"):
        n, mb = (1024, 64) if quick else (8192, 1024)
    else:
        # 2048^3 is large enough to hit peak on a few cores in ~0.1 s; 512 MB defeats caches
        n, mb = (512, 32) if quick else (2048, 512)
    # best of 10: one short probe on a shared machine read 113 GFLOP/s where an idle one
    # reads 175-199 (benchmarks/RESULTS.md); the best of many rides out transient noise
    repeats = 3 if quick else 10
    hw = detect()
    fp32 = gemm_gflops(device, n, repeats)
    ceilings = {"exact": fp32}
    for klass, short, dtype in (("bf16", "bf16", torch.bfloat16), ("fp16", "fp16", torch.float16)):
        if hw.native(short, device):
            ceilings[klass] = gemm_gflops(device, n, repeats, dtype)
    if _int8_ok(device):
        ceilings["int8"] = gemm_gflops(device, n, repeats, torch.int8)
    return Limits(gemm_gflops=fp32, gemm_n=n, bandwidth_gbps=bandwidth_gbps(device, mb, repeats),
                  copy_mb=mb, device=device, ceilings=ceilings)


def ceiling_for(limits: dict | None, precision_class: str | None) -> tuple[str, float] | None:
    """(which ceiling, its rate) a row of `precision_class` is measured against: its own
    precision's GEMM; int4 weight-only computes in BF16 where native, else FP32."""
    if not limits:
        return None
    ceilings = limits.get("ceilings") or {"exact": limits.get("gemm_gflops")}
    klass = precision_class or "exact"
    if klass == "int4":
        klass = "bf16" if "bf16" in ceilings else "exact"
    rate = ceilings.get(klass)
    return (klass, rate) if rate else None


def share_of(limits: dict | None, precision_class: str | None, achieved: float) -> float | None:
    """`achieved` GFLOP/s as a share of the row's ceiling (None when it was not measured)."""
    found = ceiling_for(limits, precision_class)
    return achieved / found[1] if found else None
