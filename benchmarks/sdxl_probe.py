"""Probe: SDXL UNet time per step, FP32 eager vs accelerated configurations, in one process.

    PYTHONPATH=$PWD python benchmarks/sdxl_probe.py --size full --resolution 512 --iters 3

One UNet is built (seeded random weights at the real shapes) and kept; configurations are
applied cumulatively to it so only one full model (~10 GB FP32) is ever in memory:

  fp32_eager       the baseline
  fp32_layout      + SDPA processors + fused QKV + channels-last   (fastpipes.accelerate)
  fp32_compile     + torch.compile (Inductor, default mode)
  bf16_compile     + BF16 weight cast (only where BF16 matmul is native), re-compiled

Where this tree has the `precision` / `compile` passes, accelerate() applies them; otherwise
the probe applies the same transform directly and labels the row "(manual)". Each row:
median (and min/max) of `--iters` UNet forwards on the CFG batch after one warm-up call,
compile time apart (first call), and PSNR of the noise prediction vs FP32 eager (peak = the
FP32 output's range). Results print as Markdown.

With ``--profile``, each configuration's step is profiled once more (torch.profiler) and its
self time is grouped by kind of work (convolutions, linear GEMMs, attention, norms, Inductor's
fused kernels), with the FLOPs of each group and the rate it reaches against a GEMM peak
measured in the same process: where the time of a step goes.
"""
from __future__ import annotations

import argparse
import gc
import statistics
import time

import torch

import fastpipes
from fastpipes.bench.limits import gemm_gflops
from fastpipes.bench.workload import WorkloadSpec
from fastpipes.hardware import detect
from fastpipes.pipelines.sdxl import SdxlShape, build_sdxl, psnr
from fastpipes.recipe.schema import SECTIONS


def build_unet(size: str, seed: int):
    from diffusers import UNet2DConditionModel

    from fastpipes.pipelines.sdxl import no_default_init, seeded_init, unet_config

    with no_default_init():
        unet = seeded_init(UNet2DConditionModel(**unet_config(SdxlShape.from_name(size))), seed)
    return unet.eval().requires_grad_(False)


def make_inputs(unet, resolution: int, seed: int) -> dict:
    from fastpipes.pipelines.sdxl import SdxlWorkload

    # reuse the workload's seeded inputs; it only reads unet config and shapes
    w = SdxlWorkload(WorkloadSpec("sdxl", options={"resolution": resolution}, seed=seed))

    class P:  # the workload reads pipe.unet only
        pass

    p = P()
    p.unet = unet
    x = w.inputs(p)
    return dict(sample=x.sample, timestep=x.timestep,
                encoder_hidden_states=x.encoder_hidden_states,
                added_cond_kwargs={"text_embeds": x.text_embeds, "time_ids": x.time_ids})


@torch.no_grad()
def call(unet, x: dict, dtype: torch.dtype) -> torch.Tensor:
    args = {k: (v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v)
            for k, v in x.items() if k != "added_cond_kwargs"}
    added = {k: v.to(dtype) for k, v in x["added_cond_kwargs"].items()}
    return unet(**args, added_cond_kwargs=added, return_dict=False)[0].float()


# FlopCounterMode op -> profile group (benchmarks/profile_groups.py)
FLOP_GROUPS = {"addmm": "GEMM: linear layers", "mm": "GEMM: linear layers",
               "convolution": "convolution", "bmm": "GEMM: batched", "baddbmm": "GEMM: batched"}


def flops_by_group(unet, x: dict) -> dict[str, float]:
    """GFLOP per profile group of one FP32 step (attention ops are counted as SDPA)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        call(unet, x, torch.float32)
    out: dict[str, float] = {}
    for op, n in counter.get_flop_counts()["Global"].items():
        name = str(op).split(".")[-1]
        group = FLOP_GROUPS.get(name, "SDPA attention" if "attention" in name else name)
        out[group] = out.get(group, 0.0) + n / 1e9
    return out


def profile_step(name: str, unet, x: dict, dtype: torch.dtype, gflop: dict, peak: float) -> None:
    from torch.profiler import ProfilerActivity, profile

    from profile_groups import group_times, table

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        call(unet, x, dtype)
    total, groups = group_times(prof)
    print(f"\nwhere {name}'s step goes:\n" + table(total, groups, gflop, peak), flush=True)


def measure(name: str, unet, x: dict, dtype: torch.dtype, iters: int, ref) -> dict:
    t0 = time.perf_counter()
    out = call(unet, x, dtype)  # warm-up (includes compilation when compiled)
    first = time.perf_counter() - t0
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        out = call(unet, x, dtype)
        times.append(time.perf_counter() - t0)
    row = dict(name=name, median=statistics.median(times), min=min(times), max=max(times),
               first=first, psnr=psnr(ref, out) if ref is not None else float("inf"), out=out)
    print(f"{name:24s} median {row['median']:.2f} s  (min {row['min']:.2f}, max {row['max']:.2f}; "
          f"first call {first:.1f} s)  PSNR {row['psnr']:.1f} dB", flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="full", choices=["full", "small", "tiny"])
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-compile", action="store_true")
    ap.add_argument("--only-fp32", action="store_true", help="skip the BF16 rows")
    ap.add_argument("--int8", action="store_true",
                    help="add a dynamic int8 (W8A8) row, compiled unless --skip-compile, as "
                         "sdxl_int8_dynamic applies it (needs --only-fp32: it runs last)")
    ap.add_argument("--profile", action="store_true",
                    help="profile one step of each configuration: where the time goes")
    args = ap.parse_args()
    if args.int8 and not args.only_fp32:
        ap.error("--int8 needs --only-fp32 (the int8 row quantizes the FP32 UNet in place)")
    if args.profile:  # name Inductor's C++ kernels in the profile (costs ~nothing per call)
        torch._inductor.config.cpp.enable_kernel_profile = True
    hw = detect()
    print(f"# {hw.cpu_model}, {hw.torch_threads} threads, bf16 native: {hw.bf16_native}, "
          f"torch {hw.torch_version}", flush=True)

    t0 = time.perf_counter()
    pipe = build_sdxl("tiny")  # a real pipeline object for the adapter; its UNet is swapped
    pipe.unet = build_unet(args.size, args.seed)
    pipe.text_encoder = pipe.text_encoder_2 = None  # not timed here; keep memory for the UNet
    print(f"build {args.size} UNet: {time.perf_counter() - t0:.1f} s, "
          f"{sum(p.numel() for p in pipe.unet.parameters()) / 1e9:.3f} B params", flush=True)
    x = make_inputs(pipe.unet, args.resolution, args.seed)

    from torch.utils.flop_counter import FlopCounterMode

    rows = []
    counter = FlopCounterMode(display=False)
    with counter:
        ref = call(pipe.unet, x, torch.float32)
    flops = counter.get_total_flops()
    print(f"UNet FLOP per step: {flops / 1e12:.3f} TFLOP", flush=True)
    rows.append(measure("fp32_eager", pipe.unet, x, torch.float32, args.iters, None))
    ref = rows[0]["out"]
    if args.profile:
        peak = gemm_gflops("cpu", n=2048, repeats=10)  # the bench's own GEMM limit probe
        gflop = flops_by_group(pipe.unet, x)
        print(f"FP32 GEMM peak (2048^3, best of 10): {peak:.0f} GFLOP/s; GFLOP per step: "
              + ", ".join(f"{k} {v:.0f}" for k, v in gflop.items()), flush=True)
        profile_step("fp32_eager", pipe.unet, x, torch.float32, gflop, peak)

    def profiled(row_name: str, dtype: torch.dtype) -> None:
        if args.profile:
            profile_step(row_name, pipe.unet, x, dtype, gflop, peak)

    report = fastpipes.accelerate(pipe, {"attention": {"backend": "sdpa"}, "fuse_qkv": {},
                                         "memory_format": {"components": ["unet"]}})
    print(report, flush=True)
    rows.append(measure("fp32_layout", pipe.unet, x, torch.float32, args.iters, ref))
    profiled("fp32_layout", torch.float32)

    if not args.skip_compile:
        if "compile" in SECTIONS:
            fastpipes.accelerate(pipe, {"compile": {"components": ["unet"]}})
            name = "fp32_compile"
        else:
            pipe.unet = torch.compile(pipe.unet)
            name = "fp32_compile (manual)"
        rows.append(measure(name, pipe.unet, x, torch.float32, args.iters, ref))
        profiled(name, torch.float32)
        torch._dynamo.reset()
        pipe.unet = getattr(pipe.unet, "_orig_mod", pipe.unet)
        gc.collect()

    if hw.bf16_native and not args.only_fp32:
        if "precision" in SECTIONS:
            fastpipes.accelerate(pipe, {"precision": {"mode": "cast", "dtype": "bfloat16",
                                                      "components": ["unet"]}})
            name, dtype = "bf16_layout", torch.float32  # the pass casts at the boundary
        else:
            pipe.unet.to(torch.bfloat16)  # replaces parameters; old FP32 tensors are freed
            name, dtype = "bf16_layout (manual cast)", torch.bfloat16
        gc.collect()
        rows.append(measure(name, pipe.unet, x, dtype, args.iters, ref))
        if not args.skip_compile:
            pipe.unet = torch.compile(pipe.unet)
            rows.append(measure(name.replace("layout", "compile"), pipe.unet, x, dtype,
                                args.iters, ref))

    if args.int8:
        pipe.unet._compiled_call_impl = None  # drop the FP32 compile: quantize, then recompile
        recipe = {"quantize": {"mode": "dynamic", "components": ["unet"]}}
        if not args.skip_compile:
            recipe["compile"] = {"components": ["unet"]}
        print(fastpipes.accelerate(pipe, recipe), flush=True)
        gc.collect()
        name = "int8_dynamic" + ("" if args.skip_compile else "_compile")
        rows.append(measure(name, pipe.unet, x, torch.float32, args.iters, ref))
        profiled(name, torch.float32)

    base = rows[0]["median"]
    print(f"\n| config | UNet s/step (median of {args.iters}) | min-max | first call s | "
          f"speedup | PSNR dB vs FP32 | GFLOP/s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['median']:.2f} | {r['min']:.2f}-{r['max']:.2f} | "
              f"{r['first']:.1f} | {base / r['median']:.2f}x | {r['psnr']:.1f} | "
              f"{flops / r['median'] / 1e9:.0f} |")


if __name__ == "__main__":
    main()
