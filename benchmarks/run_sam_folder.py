"""Issue 16 part 4: `fastpipes run sam` on a folder, FP32 eager vs a recipe, one process vs
Ray actors, cold vs warm actor starts, and per-click latency on a cached embedding.

    python benchmarks/make_images.py bench-out/images --count 24
    python benchmarks/run_sam_folder.py --images bench-out/images --model vit_b \
        --random-weights --recipe sam_bf16 --out bench-out/run_sam
    # smoke test of this script (seconds-long runs, numbers meaningless):
    python benchmarks/run_sam_folder.py --images /tmp/imgs --model tiny --random-weights \
        --recipe sam_fp32_fast --set compile.enabled=false --clicks 5 --out /tmp/run_sam

Every job is a fresh `fastpipes run sam` process with its own --out (nothing skipped) and
its own empty FASTPIPES_CACHE_DIR (a cold start; the Ray run with 2 actors shows actor 1
cold against actor 2 warm on the cache actor 1 filled). Writes OUT/results.json and
OUT/results.md (the commands, the machine tier, one row per job). Run it on an otherwise
idle machine; the table says which machine and when.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_job(name: str, args: list[str], out: Path) -> dict:
    dest = out / name
    cmd = [sys.executable, "-m", "fastpipes", "run", "sam", *args, "--out", str(dest), "--quiet"]
    env = {**os.environ, "FASTPIPES_CACHE_DIR": tempfile.mkdtemp(prefix=f"fp-cache-{name}-")}
    print(f"== {name}: {shlex.join(cmd[2:])}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, text=True, capture_output=True)
    wall = time.perf_counter() - t0
    print(proc.stdout, proc.stderr[-2000:] if proc.returncode not in (0, 1) else "", flush=True)
    if not (dest / "summary.json").exists():
        raise SystemExit(f"{name} failed (exit {proc.returncode})")
    summary = json.loads((dest / "summary.json").read_text())
    return {"name": name, "command": "fastpipes " + shlex.join(cmd[3:]), "exit": proc.returncode,
            "process_wall_s": wall, **{k: summary[k] for k in (
                "engine", "total", "done", "failed", "recipe", "wall_s", "items_per_s",
                "start", "speedup", "speedup_source")}}


def click_latency(model: str, checkpoint: str | None, recipe: str, overrides: list[str],
                  image_path: Path, clicks: int) -> dict:
    """Median seconds of SamPredictor.predict (one point) on a cached embedding, FP32 eager
    then accelerated (the encoder is accelerated too, so set_image runs again)."""
    import numpy as np

    import fastpipes
    from fastpipes.sam.pipeline import build_sam
    from fastpipes.sam.predictor import SamPredictor
    from fastpipes.sam.image_io import load_image

    image = load_image(str(image_path))
    point, label = np.array([[image.shape[1] / 2, image.shape[0] / 2]]), np.array([1])
    pred = SamPredictor(build_sam(model, checkpoint))

    def timed() -> list[float]:
        pred.set_image(image)
        for _ in range(3):  # warm-up (a compiled or autocast decoder settles here)
            pred.predict(point, label)
        times = []
        for _ in range(clicks):
            t0 = time.perf_counter()
            pred.predict(point, label)
            times.append(time.perf_counter() - t0)
        return times

    fp32 = timed()
    report = fastpipes.accelerate(pred, recipe, overrides or None)
    fast = timed()
    return {"image": image_path.name, "clicks": clicks, "recipe": report.recipe,
            "fp32_median_s": statistics.median(fp32), "fp32_min_s": min(fp32),
            "accelerated_median_s": statistics.median(fast), "accelerated_min_s": min(fast),
            "ratio": statistics.median(fast) / statistics.median(fp32)}


def markdown(result: dict) -> str:
    lines = [f"SAM `{result['model']}` on {result['images']} ({result['count']} images), "
             f"{result['when']}, tier `{result['tier']}` ({result['cpu']}), torch {result['torch']}",
             "", "| job | engine | recipe | done | failed | images/s (after start) | wall s | "
             "starts (s): build / accelerate / warm-up (waited) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["jobs"]:
        starts = "; ".join(f"{s['build_s']:.1f} / {s['accelerate_s']:.1f} / {s['warm_up_s']:.1f}"
                           f" ({s.get('wait_s', 0):.1f})" for s in r["start"])
        rate = f"{r['items_per_s']:.3f}" if r["items_per_s"] else "-"
        lines.append(f"| {r['name']} | {r['engine']} | {r['recipe']} | {r['done']} | "
                     f"{r['failed']} | {rate} | {r['wall_s']:.1f} | {starts} |")
    c = result.get("clicks")
    if c:
        lines += ["", f"Per click (`SamPredictor.predict`, one point, cached embedding, "
                      f"{c['clicks']} calls, {c['image']}): FP32 eager median "
                      f"{c['fp32_median_s'] * 1e3:.2f} ms, {c['recipe']} median "
                      f"{c['accelerated_median_s'] * 1e3:.2f} ms (x{c['ratio']:.2f})."]
    lines += ["", "Commands:", ""] + [f"    {r['command']}" for r in result["jobs"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default="vit_b")
    ap.add_argument("--checkpoint")
    ap.add_argument("--random-weights", action="store_true")
    ap.add_argument("--recipe", default="auto")
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    ap.add_argument("--points", default="100,100", help="the prompt on every image")
    ap.add_argument("--actors", default="1,2", help="Ray actor counts to run (empty: no Ray)")
    ap.add_argument("--clicks", type=int, default=50, help="per-click calls (0: skip)")
    args = ap.parse_args()

    import torch

    from fastpipes.hardware import detect

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = ["--model", args.model] + (["--checkpoint", args.checkpoint] if args.checkpoint
                                       else ["--random-weights"] if args.random_weights else [])
    base = ["--images", args.images, "--points", args.points, *model]
    sets = [x for o in args.overrides for x in ("--set", o)]
    jobs = [run_job("fp32_eager", base + ["--recipe", "none"], out),
            run_job("recipe_local", base + ["--recipe", args.recipe, *sets], out)]
    cores = os.cpu_count() or 1
    for n in filter(None, (int(a) for a in args.actors.split(",") if a)):
        jobs.append(run_job(f"ray_{n}_actors", base + [
            "--recipe", args.recipe, *sets, "--engine", "ray", "--actors", str(n),
            "--cpus-per-actor", str(max(1, cores // n))], out))
    hw = detect()
    images = sorted(p for p in Path(args.images).iterdir()
                    if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    result = {"model": args.model, "images": args.images, "count": len(images),
              "when": time.strftime("%Y-%m-%d %H:%M"), "tier": hw.tier,
              "cpu": hw.cpu_model, "torch": torch.__version__, "jobs": jobs}
    if args.clicks:
        result["clicks"] = click_latency(args.model, args.checkpoint, args.recipe,
                                         args.overrides, images[0], args.clicks)
    (out / "results.json").write_text(json.dumps(result, indent=1))
    (out / "results.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
