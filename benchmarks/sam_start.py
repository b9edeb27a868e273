"""A fresh process's first SAM mask (issue 24): build + accelerate + set_image + one click,
each configuration in new processes, FP32 eager and the recipes interleaved per round.

    PYTHONPATH=$PWD python benchmarks/sam_start.py vit_b 3 sam_bf16,sam_bf16_aot

Round 0 is the cold start (compiles fill the caches; reported apart); the medians are over the
warm rounds. Each child prints its phases as JSON; the parent adds the process wall time
(interpreter start and imports included). The fastpipes cache is the user's (FASTPIPES_CACHE_DIR
if set).
"""
import json
import statistics
import subprocess
import sys
import time

PHASES = ("import", "build", "accelerate", "set_image", "click")


def child(model: str, recipe: str) -> None:
    t = {"start": time.perf_counter()}
    import numpy as np
    import torch

    import fastpipes
    from fastpipes.sam.inputs import smooth_images
    from fastpipes.sam.pipeline import build_sam
    from fastpipes.sam.predictor import SamPredictor
    torch.set_num_threads(2)
    t["import"] = time.perf_counter()
    pred = SamPredictor(build_sam(model, seed=0))
    t["build"] = time.perf_counter()
    if recipe != "fp32":
        fastpipes.accelerate(pred, recipe)
    t["accelerate"] = time.perf_counter()
    image = smooth_images(1, 1024, 0)[0][:768]
    pred.set_image(image)
    t["set_image"] = time.perf_counter()
    masks, _, _ = pred.predict(point_coords=np.array([[500.0, 400.0]]),
                               point_labels=np.array([1]), multimask_output=True)
    t["click"] = time.perf_counter()
    order = ["start", *PHASES]
    print(json.dumps({p: t[p] - t[order[i - 1]] for i, p in enumerate(order) if i}))


def run(model: str, recipe: str) -> dict:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--child", model, recipe],
                         capture_output=True, text=True, check=True)
    phases = json.loads(out.stdout.strip().splitlines()[-1])
    return {**phases, "process": time.perf_counter() - t0}


def main(model: str, rounds: int, recipes: list[str]) -> None:
    configs = ["fp32", *recipes]
    runs = {c: [] for c in configs}
    for r in range(rounds + 1):
        for c in configs:
            runs[c].append(run(model, c))
            print(f"round {r} {c}: " + ", ".join(f"{k} {v:.2f} s" for k, v in runs[c][-1].items()),
                  flush=True)
    base = statistics.median(x["process"] for x in runs["fp32"][1:])
    print(f"\n{model}, warm rounds {rounds}: median seconds per phase (process = wall of the new process)")
    for c in configs:
        med = {k: statistics.median(x[k] for x in runs[c][1:]) for k in (*PHASES, "process")}
        print(f"{c:16s} " + "  ".join(f"{k} {v:6.2f}" for k, v in med.items())
              + f"  -> {med['process'] / base:.2f}x FP32's time to first mask"
              + f"  (cold: {runs[c][0]['process']:.1f} s)")


if __name__ == "__main__":
    if sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
    else:
        main(sys.argv[1], int(sys.argv[2]), sys.argv[3].split(","))
