"""Many prompts on one image (issue 24: "predict_batch / many points per image scale better
than linearly"): P single-point prompts in one decoder batch (`predict_prompts`) against P
separate clicks, per configuration, interleaved in one process on one seeded embedding.

    PYTHONPATH=$PWD python benchmarks/sam_prompt_batch.py vit_b 5 8,32 sam_bf16_click_aot

Printed per configuration and P: the median time of one batched call, per prompt, and the
scaling = (batched call) / (P x one click): below 1.00 the batch is cheaper than clicking P
times. Each P is a new decoder input shape: compiled recipes compile once per P (not timed).
"""
import statistics
import sys
import time

import numpy as np
import torch

import fastpipes
from fastpipes.sam.inputs import seeded_features
from fastpipes.sam.pipeline import build_sam
from fastpipes.sam.predictor import SamPredictor


def prompts(p: int, h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.stack([rng.uniform(0, w, p), rng.uniform(0, h, p)], axis=1)[:, None, :]  # P x 1 x 2


def main(model: str, rounds: int, counts: list[int], recipes: list[str]) -> None:
    torch.set_num_threads(2)
    h, w = {"tiny": (48, 64)}.get(model, (768, 1024))
    preds = {}
    for name in ["fp32"] + recipes:
        pred = SamPredictor(build_sam(model, seed=0))
        if name != "fp32":
            fastpipes.accelerate(pred, name)
        pred.set_features(seeded_features(pred.model, 0), (h, w))
        preds[name] = pred
    calls = {p: prompts(p, h, w) for p in [1] + counts}
    for pred in preds.values():  # compiles each shape here, outside the timing
        for pts in calls.values():
            pred.predict_prompts(pts, np.ones(pts.shape[:2]), multimask_output=True)
    times = {(n, p): [] for n in preds for p in calls}
    for _ in range(rounds):
        for name, pred in preds.items():
            for p, pts in calls.items():
                t0 = time.perf_counter()
                pred.predict_prompts(pts, np.ones(pts.shape[:2]), multimask_output=True)
                times[name, p].append(time.perf_counter() - t0)
    for name in preds:
        one = statistics.median(times[name, 1])
        print(f"{name:22s} 1 prompt {one * 1e3:8.1f} ms")
        for p in counts:
            med = statistics.median(times[name, p])
            print(f"{'':22s} {p:3d} prompts {med * 1e3:8.1f} ms  ({med / p * 1e3:6.1f} ms each, "
                  f"scaling {med / (p * one):.2f} of linear)")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), [int(c) for c in sys.argv[3].split(",")],
         sys.argv[4].split(",") if len(sys.argv) > 4 else [])
