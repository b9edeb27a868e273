"""Interleaved SAM image-encoder variants in one process (issue 26 part 4): FP32 eager and
recipes with overrides, round-robin on the same seeded image, medians; fidelity of each
against FP32 eager by SAM's bf16 bars; then one profiled call per variant, its time by op.

    PYTHONPATH=$PWD python benchmarks/sam_encoder_interleaved.py vit_b 4 \
        "sam_bf16" "sam_bf16:compile.options.freezing=false" "sam_bf16:precision.mode=cast"

A variant is RECIPE[:OVERRIDE;OVERRIDE...]. Compare variants only within one run: on a
shared machine absolute times drift, ratios of interleaved medians much less.
"""
import statistics
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

import fastpipes
from fastpipes.fidelity import relative_error
from fastpipes.sam.inputs import decode_masks, mask_iou, sam_inputs, smooth_images
from fastpipes.sam.pipeline import build_sam


def load() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3])


def fmt(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds * 1e3:.2f} ms"


def timed(fn) -> tuple[float, torch.Tensor]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main(model: str, rounds: int, specs: list[str]) -> None:
    torch.set_num_threads(2)
    encoders = {"fp32_eager": build_sam(model, seed=0)}
    size = encoders["fp32_eager"].image_encoder.img_size
    inputs = sam_inputs(encoders["fp32_eager"], smooth_images(1, size, 0), 8, 0)
    x = inputs["images"]  # [1, 3, S, S]
    with torch.inference_mode():
        emb_ref = encoders["fp32_eager"].image_encoder(x)
        masks_ref = decode_masks(encoders["fp32_eager"], emb_ref, inputs)
    for spec in specs:
        recipe, _, overrides = spec.partition(":")
        sam = build_sam(model, seed=0)
        fastpipes.accelerate(sam, recipe, [o for o in overrides.split(";") if o])
        with torch.inference_mode():
            first, emb = timed(lambda: sam.image_encoder(x))
            masks = decode_masks(sam, emb, inputs)
        ious = [mask_iou(a, b) for a, b in zip(masks_ref.flatten(0, 1), masks.flatten(0, 1))]
        print(f"{spec}: first call {first:.1f} s, mask IoU min {min(ious):.4f}, embedding rel. "
              f"err {relative_error(emb_ref, emb):.2e} (load {load()})", flush=True)
        encoders[spec] = sam
    times: dict[str, list[float]] = {k: [] for k in encoders}
    with torch.inference_mode():
        for r in range(rounds):
            for name, sam in encoders.items():
                times[name].append(timed(lambda: sam.image_encoder(x))[0])
            print(f"round {r}: " + ", ".join(f"{k} {fmt(v[-1])}" for k, v in times.items())
                  + f" (load {load()})", flush=True)
    base = statistics.median(times["fp32_eager"])
    first_recipe = statistics.median(times[specs[0]]) if specs else base
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:50s} median {fmt(med)} (min {fmt(min(ts))}, max {fmt(max(ts))})  "
              f"{base / med:4.2f}x FP32 eager  {first_recipe / med:4.2f}x {specs[0] if specs else ''}")
    for name in specs:
        with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
            encoders[name].image_encoder(x)
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events)
        print(f"== {name}: profiled call {total / 1e6:.2f} s (load {load()})")
        for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:8]:
            print(f"   {100 * e.self_cpu_time_total / total:5.1f}%  {e.self_cpu_time_total / 1e6:7.3f} s"
                  f"  x{e.count:<4d} {e.key[:80]}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3:])
