"""Raw kernel rates on this machine: GEMM in FP32/BF16/FP16, one decode-sized GEMV per
weight-only kernel, and compute-bound Linear layers in FP32 vs dynamic int8 (W8A8). The numbers quoted in docs/passes/precision.md and quantize.md come
from this script.

    PYTHONPATH=$PWD python benchmarks/kernels_probe.py [--threads 2]

Medians of `--reps` timed calls after warm-up; everything in one process, back to back.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from fastpipes.hardware import detect
from fastpipes.kernels.woq import Int4WeightOnlyLinear, Int8DynamicLinear, Int8WeightOnlyLinear


def median_s(fn, reps: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    info = detect()
    print(f"# {info.cpu_model}, torch {info.torch_version}, {args.threads} threads, "
          f"bf16 native: {info.bf16_native}, fp16 native: {info.fp16_native}")

    n = 1024
    print(f"\n## GEMM {n}x{n}x{n} (median of {args.reps})")
    for dt in (torch.float32, torch.bfloat16, torch.float16):
        a, b = torch.randn(n, n, dtype=dt), torch.randn(n, n, dtype=dt)
        reps = args.reps if dt != torch.float16 or info.fp16_native else 2  # emulated: slow
        s = median_s(lambda: a @ b, reps, warmup=1)
        print(f"{str(dt):16s} {s * 1e3:10.2f} ms  {2 * n**3 / s / 1e9:8.1f} GFLOP/s")

    print(f"\n## one-token GEMV through a Linear, x: [1, K] (median of {args.reps * 3})")
    for k, nout in ((2048, 8192), (8192, 2048)):
        lin = torch.nn.Linear(k, nout, bias=False)
        x = torch.randn(1, k)
        lin_bf16 = torch.nn.Linear(k, nout, bias=False).to(torch.bfloat16)
        rows = [("fp32 nn.Linear", lin, x), ("bf16 nn.Linear", lin_bf16, x.bfloat16())]
        for act in ("float32", "bfloat16"):
            rows.append((f"int8, {act} act", Int8WeightOnlyLinear.from_linear(lin, act), x))
            rows.append((f"int4 g128, {act} act", Int4WeightOnlyLinear.from_linear(lin, 128, act), x))
        print(f"### {k} -> {nout}")
        with torch.no_grad():
            for name, mod, inp in rows:
                s = median_s(lambda: mod(inp), args.reps * 3)
                print(f"{name:22s} {s * 1e3:8.3f} ms")

    # compute-bound: SAM vit_b's MLP (4096 tokens) and an SDXL UNet feed-forward (2 x 1024
    # tokens at 32x32 latents, width 1280 -> GEGLU 10240)
    print(f"\n## compute-bound Linear, x: [M, K] (median of {args.reps})")
    print("shape (M x K -> N) | fp32 nn.Linear | aten._int_mm alone | Int8DynamicLinear "
          "(quantize + GEMM + rescale) | layer rel. error vs fp32")
    for m, k, nout in ((4096, 768, 3072), (2048, 1280, 10240)):
        lin = torch.nn.Linear(k, nout)
        x = torch.randn(m, k)
        q = Int8DynamicLinear.from_linear(lin)
        a8 = torch.randint(-127, 128, (m, k), dtype=torch.int8)
        with torch.no_grad():
            t32 = median_s(lambda: lin(x), args.reps)
            t8 = median_s(lambda: torch._int_mm(a8, q.weight.t()), args.reps)
            tq = median_s(lambda: q(x), args.reps)
            ref = lin(x)
            err = ((q(x) - ref).norm() / ref.norm()).item()
        gf = 2 * m * k * nout / 1e9
        print(f"{m} x {k} -> {nout} | {t32 * 1e3:.1f} ms ({gf / t32:.0f} GFLOP/s) | "
              f"{t8 * 1e3:.1f} ms ({gf / t8:.0f} GOP/s) | {tq * 1e3:.1f} ms ({t32 / tq:.2f}x) | "
              f"{err:.1e}")


if __name__ == "__main__":
    main()
