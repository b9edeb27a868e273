"""Probe: which configuration makes the SAM image encoder fast on this CPU?

Times FP32 eager against candidate configurations on the same seeded inputs, interleaved
round by round (the machine may be shared), and reports medians, speedup, embedding
relative error and mask IoU vs FP32 eager, compile time, the measured GEMM peak and the
fraction of it each configuration reaches. Optionally profiles one configuration.

    PYTHONPATH=$PWD python benchmarks/sam_probe.py --model vit_b --iters 3 \
        --configs eager,sdpa,sdpa_compile_freeze,bf16_sdpa_compile_freeze --profile sdpa_compile_freeze

--profile prints torch.profiler's top ops and a breakdown of one call's time by group (GEMMs,
SDPA, Inductor's fused kernels, copies) with the GFLOP/s the linear layers reach.

Configurations (comma list):
  eager                       FP32 upstream attention
  sdpa                        FP32 + attention pass (SDPA, block-wise rel-pos mask)
  sdpa_compile                + torch.compile(image_encoder) default Inductor
  sdpa_compile_freeze         + Inductor freezing (weights as constants, oneDNN prepacking)
  sdpa_cl_compile_freeze      + channels-last image encoder
  bf16_sdpa_compile_freeze    image encoder weights cast to BF16 + SDPA + compile + freezing
                              (only sensible on CPUs with native BF16)
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import fastpipes
from fastpipes.bench.workload import WorkloadSpec
from fastpipes.pipelines.sam import SamWorkload, mask_iou


def gemm_gflops(dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def make(name: str, wl: SamWorkload, block_size: int):
    sam = wl.build()
    t0 = time.perf_counter()
    if "sdpa" in name:
        fastpipes.accelerate(sam, {"attention": {"backend": "sdpa", "block_size": block_size}})
    if name.startswith("bf16"):
        sam.image_encoder.to(torch.bfloat16)
    if "_cl" in name:
        fastpipes.accelerate(sam, {"memory_format": {"components": ["image_encoder"]}})
    if "compile" in name:
        opts = {"freezing": True} if "freeze" in name else {}
        sam.image_encoder = torch.compile(sam.image_encoder, options=opts)
    return sam, time.perf_counter() - t0


def run(wl, sam, inputs, bf16: bool):
    x = dict(inputs)
    if bf16:
        x["images"] = x["images"].to(torch.bfloat16)
    t0 = time.perf_counter()
    out = wl.run(sam, x)
    dt = time.perf_counter() - t0
    out.embeddings = out.embeddings.float()
    return out, dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="vit_b")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--configs", default="eager,sdpa,sdpa_compile_freeze")
    ap.add_argument("--block-size", type=int, default=1024)
    ap.add_argument("--profile", default="")
    ap.add_argument("--json", default="")
    args = ap.parse_args()

    torch.manual_seed(0)
    if args.profile:  # name Inductor's C++ kernels in the profile (costs ~nothing per call)
        torch._inductor.config.cpp.enable_kernel_profile = True
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    peak32, peak16 = gemm_gflops(torch.float32), gemm_gflops(torch.bfloat16)
    print(f"GEMM 2048^3: fp32 {peak32:.0f} GFLOP/s, bf16 {peak16:.0f} GFLOP/s")

    wl = SamWorkload(WorkloadSpec("sam", model=args.model))
    names = args.configs.split(",")
    pipes, setup, compile_s, outs = {}, {}, {}, {}
    inputs = None
    for n in names:
        sam, setup[n] = make(n, wl, args.block_size)
        if inputs is None:
            inputs = wl.inputs(sam)
            flops = wl.flops(wl.build(), inputs)  # FP32 eager: a compiled model is not counted
            print(f"{wl.describe()}: {flops / 1e9:.0f} GFLOP")
        out, first = run(wl, sam, inputs, n.startswith("bf16"))  # warm-up (compiles)
        compile_s[n] = first
        outs[n] = out
        pipes[n] = sam
        print(f"{n}: setup {setup[n]:.1f}s, first call {first:.1f}s", flush=True)

    times = {n: [] for n in names}
    for i in range(args.iters):  # interleaved rounds
        for n in names:
            _, dt = run(wl, pipes[n], inputs, n.startswith("bf16"))
            times[n].append(dt)
        print(f"round {i}: " + ", ".join(f"{n} {times[n][-1]:.2f}s" for n in names), flush=True)

    ref = outs[names[0]]
    base = statistics.median(times[names[0]])
    rows = []
    for n in names:
        med = statistics.median(times[n])
        fid = wl.fidelity(ref, outs[n])
        peak = peak16 if n.startswith("bf16") else peak32
        rows.append({"config": n, "median_s": med, "min_s": min(times[n]), "max_s": max(times[n]),
                     "speedup": base / med, "first_call_s": compile_s[n],
                     "gflops": flops / med / 1e9, "pct_gemm_peak": 100 * flops / med / 1e9 / peak,
                     **fid.metrics, "fidelity_ok": fid.ok})
    print(f"\n| config | median s | min-max s | speedup | first call s | GFLOP/s | % GEMM peak | "
          "emb rel err | mask IoU min |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['config']} | {r['median_s']:.2f} | {r['min_s']:.2f}-{r['max_s']:.2f} | "
              f"{r['speedup']:.2f}x | {r['first_call_s']:.1f} | {r['gflops']:.0f} | "
              f"{r['pct_gemm_peak']:.0f}% | {r['embedding_rel_err']:.2e} | {r['mask_iou_min']:.4f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"peak_fp32": peak32, "peak_bf16": peak16, "flops": flops, "rows": rows}, f,
                      indent=1)

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        n = args.profile
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run(wl, pipes[n], inputs, n.startswith("bf16"))
        print(f"\nprofile of {n}:")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
        print(breakdown(prof, wl, inputs, peak32, flops))


def breakdown(prof, wl, inputs, peak32: float, total_flops: float) -> str:
    """Self CPU time per group, and what the GEMM groups reach against the GEMM peak."""
    from torch.utils.flop_counter import FlopCounterMode

    from profile_groups import group_times

    total, groups = group_times(prof)
    # FLOPs by op on the uncompiled SDPA model (same math as the compiled one)
    sam = wl.build()
    fastpipes.accelerate(sam, {"attention": {"backend": "sdpa"}})
    with FlopCounterMode(display=False) as fc, torch.inference_mode():
        sam.image_encoder(inputs["images"])
    by_op = {str(k): v for k, v in fc.get_flop_counts()["Global"].items()}
    linear = sum(v for k, v in by_op.items() if k.endswith(("addmm", ".mm")))
    # FlopCounterMode does not count the CPU flash kernel: attention is the rest of the
    # eager model's total (which computes attention with matmuls)
    attn = total_flops - sum(by_op.values())
    sdpa_t = groups.get("SDPA attention", 0.0)
    lines = [f"profiled call: {total:.2f} s of op time", "| group | s | share |",
             "|---|---|---|"]
    for g, t in sorted(groups.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {g} | {t:.2f} | {100 * t / total:.0f}% |")
    gemm_t = groups.get("GEMM: linear layers", 0.0)
    if gemm_t:
        lines.append(f"linear layers: {linear / 1e9:.0f} GFLOP in {gemm_t:.2f} s -> "
                     f"{linear / gemm_t / 1e9:.0f} GFLOP/s ({100 * linear / gemm_t / 1e9 / peak32:.0f}% "
                     f"of the {peak32:.0f} GFLOP/s GEMM peak)")
    if sdpa_t and attn:
        lines.append(f"SDPA: {attn / 1e9:.0f} GFLOP in {sdpa_t:.2f} s -> {attn / sdpa_t / 1e9:.0f} "
                     f"GFLOP/s ({100 * attn / sdpa_t / 1e9 / peak32:.0f}% of the GEMM peak)")
    lines.append("FLOPs by op: " + ", ".join(f"{k} {v / 1e9:.0f} G" for k, v in by_op.items()))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
