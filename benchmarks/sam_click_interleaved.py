"""Interleaved SAM clicks, one process, one seeded embedding: FP32 eager against decoder-only
precision/compile variants (issue 24). Ratios in one run; medians after a warm-up.

    PYTHONPATH=$PWD python benchmarks/sam_click_interleaved.py tiny 200
    PYTHONPATH=$PWD python benchmarks/sam_click_interleaved.py vit_b 25
    PYTHONPATH=$PWD python benchmarks/sam_click_interleaved.py tiny 200 compiled_fp32_dec,aot_fp32_dec
"""
import statistics
import sys
import time

import torch

import fastpipes
from fastpipes.sam.click import click_prompts
from fastpipes.sam.inputs import seeded_features
from fastpipes.sam.pipeline import build_sam
from fastpipes.sam.predictor import SamPredictor

DEC = {"components": ["mask_decoder"]}
CONFIGS = {
    "fp32_eager": None,
    "autocast_dec": {"precision": {"mode": "autocast", "dtype": "bfloat16", **DEC}},
    "cast_dec": {"precision": {"mode": "cast", "dtype": "bfloat16", **DEC}},
    "compiled_cast_dec": {"precision": {"mode": "cast", "dtype": "bfloat16", **DEC},
                          "compile": {**DEC, "options": {"freezing": True}}},
    "compiled_fp32_dec": {"compile": {**DEC, "options": {"freezing": True}}},
    # ahead of time (AOTInductor package): no Dynamo guards or frames per click
    "aot_fp32_dec": {"compile": {**DEC, "backend": "aot_inductor"}},
    "aot_cast_dec": {"precision": {"mode": "cast", "dtype": "bfloat16", **DEC},
                     "compile": {**DEC, "backend": "aot_inductor"}},
}


def main(model: str, rounds: int, only: list[str] | None = None) -> None:
    torch.set_num_threads(2)
    size = {"tiny": (48, 64)}.get(model, (768, 1024))
    prompt = click_prompts("point", *size, seed=0)[0]
    preds = {}
    for name, overrides in CONFIGS.items():
        if only and name != "fp32_eager" and name not in only:
            continue
        pred = SamPredictor(build_sam(model, seed=0))
        if overrides is not None:
            fastpipes.accelerate(pred, overrides)
        pred.set_features(seeded_features(pred.model, 0), size)
        pred.predict(**prompt, multimask_output=True)  # compiles here
        preds[name] = pred
    times = {k: [] for k in preds}
    for _ in range(rounds):
        for name, pred in preds.items():
            t0 = time.perf_counter()
            pred.predict(**prompt, multimask_output=True)
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["fp32_eager"][rounds // 10:])
    for name, ts in times.items():
        med = statistics.median(ts[rounds // 10:])
        print(f"{name:20s} {med * 1e3:8.3f} ms  {base / med:5.2f}x vs FP32 eager")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",") if len(sys.argv) > 3 else None)
