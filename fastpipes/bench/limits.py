"""Machine limits measured in the run: FP32 GEMM throughput and memory-copy bandwidth.

Rows of a benchmark report their achieved GFLOP/s (or GB/s for memory-bound work) as a
share of these numbers, so "2x faster" can be read against "how far from the machine".
Measured once per invocation (in the baseline worker, under the benchmark's thread count).

>>> lim = measure_limits("cpu", quick=True)   # doctest: +SKIP
>>> lim.gemm_gflops, lim.bandwidth_gbps       # doctest: +SKIP
(184.2, 31.7)
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch


@dataclass
class Limits:
    gemm_gflops: float  # best of a few FP32 n x n x n matmuls
    gemm_n: int
    bandwidth_gbps: float  # best of a few large copies: (read + write bytes) / time
    copy_mb: float
    device: str

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


def gemm_gflops(device: str = "cpu", n: int = 2048, repeats: int = 3) -> float:
    """Best FP32 GEMM rate on `device` for an n x n x n matmul (2 n^3 FLOPs)."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    out = torch.empty(n, n, device=device)
    t = _best_time(lambda: torch.mm(a, b, out=out), device, repeats)
    return 2 * n**3 / t / 1e9


def bandwidth_gbps(device: str = "cpu", mb: float = 512, repeats: int = 3) -> float:
    """Best copy bandwidth: a `mb`-MB FP32 tensor copied into another (read + write)."""
    numel = int(mb * 2**20 / 4)
    src = torch.ones(numel, device=device)
    dst = torch.empty_like(src)
    t = _best_time(lambda: dst.copy_(src), device, repeats)
    return 2 * src.nbytes / t / 1e9


def measure_limits(device: str = "cpu", quick: bool = False) -> Limits:
    """Both limits; `quick` uses small sizes (tests, smoke runs: less accurate)."""
    if device.startswith("cuda"):
        n, mb = (1024, 64) if quick else (8192, 1024)
    else:
        # 2048^3 is large enough to hit peak on a few cores in ~0.1 s; 512 MB defeats caches
        n, mb = (512, 32) if quick else (2048, 512)
    # best of 10: one short probe on a shared machine read 113 GFLOP/s where an idle one
    # reads 175-199 (benchmarks/RESULTS.md); the best of many rides out transient noise
    repeats = 3 if quick else 10
    return Limits(gemm_gflops=gemm_gflops(device, n, repeats), gemm_n=n,
                  bandwidth_gbps=bandwidth_gbps(device, mb, repeats), copy_mb=mb, device=device)
