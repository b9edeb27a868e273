"""Raw kernel rates on this machine: GEMM in FP32/BF16/FP16, one decode-sized GEMV per
weight-only kernel, the same GEMVs streaming their weights from memory (as in a real decode,
where the model does not fit in cache), SDPA at SAM's global-attention shape, and
compute-bound Linear layers in FP32 vs dynamic int8 (W8A8). The kernel numbers quoted in
docs/ and benchmarks/RESULTS.md come from this script.

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

    stream_gemv(args.reps)
    sdpa_sam(args.reps)

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


def stream_gemv(reps: int, n: int = 8192, k: int = 2048, layers: int = 48) -> None:
    """One-token GEMVs over `layers` different weights (3.2 GB in FP32): each weight comes
    from memory, not cache, as in a decode; rate = weight bytes read per second."""
    from fastpipes.kernels.woq import quantize_int4, quantize_int8

    print(f"\n## decode GEMV streaming {layers} weights of {n} x {k} from memory (best of {reps})")
    x = torch.randn(1, k)
    xb = x.bfloat16()
    ws = [torch.randn(n, k) * 0.02 for _ in range(layers)]

    def stream(fn, items) -> float:
        fn(items[0])
        best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            for it in items:
                fn(it)
            best = min(best, time.perf_counter() - t0)
        return best

    rows = [("fp32 F.linear", stream(lambda w: torch.nn.functional.linear(x, w), ws), 4.0)]
    wb = [w.bfloat16() for w in ws]
    rows.append(("bf16 F.linear", stream(lambda w: torch.nn.functional.linear(xb, w), wb), 2.0))
    del wb
    q8 = [(q, s.bfloat16()) for q, s in map(quantize_int8, ws)]
    rows.append(("int8 _weight_int8pack_mm", stream(
        lambda q: torch.ops.aten._weight_int8pack_mm(xb, q[0], q[1]), q8), 1.0))
    del q8
    q4 = []
    for w in ws:
        wi, sz = quantize_int4(w, 128)
        q4.append((torch.ops.aten._convert_weight_to_int4pack_for_cpu(wi, 1), sz.bfloat16()))
    rows.append(("int4 _weight_int4pack_mm", stream(
        lambda q: torch.ops.aten._weight_int4pack_mm_for_cpu(xb, q[0], 128, q[1]), q4), 0.5))
    for name, t, bytes_per_weight in rows:
        gb = layers * n * k * bytes_per_weight / 1e9
        print(f"{name:26s} {t * 1e3 / layers:7.3f} ms/layer {gb / t:7.1f} GB/s of weights")


def sdpa_sam(reps: int, heads: int = 12, tokens: int = 4096, dim: int = 64) -> None:
    """SDPA at SAM vit_b's global-attention shape, with and without the additive rel-pos
    mask, whole or `rows` query rows at a time (what attention.block_size does)."""
    import torch.nn.functional as F

    print(f"\n## SDPA at SAM's global attention: [1, {heads}, {tokens}, {dim}] (median of {reps})")
    flops = 4 * heads * tokens * tokens * dim
    for dt in (torch.bfloat16, torch.float32):
        q, k, v = (torch.randn(1, heads, tokens, dim, dtype=dt) for _ in range(3))
        for rows in (tokens, 1024, 256):
            for masked in (False, True):
                mask = torch.randn(1, heads, rows, tokens, dtype=dt) if masked else None

                def call():
                    for s in range(0, tokens, rows):
                        F.scaled_dot_product_attention(q[:, :, s:s + rows], k, v, attn_mask=mask)

                t = median_s(call, reps, warmup=1)
                print(f"{str(dt):15s} {rows:5d} rows, mask {str(masked):5s} {t * 1e3:8.1f} ms "
                      f"{flops / t / 1e9:7.0f} GFLOP/s")


if __name__ == "__main__":
    main()
