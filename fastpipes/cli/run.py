"""``fastpipes run FAMILY``: run an accelerated pipeline over your inputs (resumable).

    fastpipes run sam --images photos/ --points 320,240 --checkpoint sam_vit_b_01ec64.pth --out masks/
    fastpipes run sam --images 'shots/**/*.jpg' --everything --model vit_h --checkpoint sam_vit_h.pth --out all/
    fastpipes run sdxl --prompts prompts.txt --model ~/models/sdxl-base --steps 30 --out images/
    fastpipes run llama --prompts prompts.jsonl --model ~/models/Llama-3.2-1B --out completions/
    fastpipes run sam ... --engine ray --actors 2          # the same job on Ray Data

Rerun the same command to resume: finished inputs are skipped. Exit status: 0 all done,
1 some inputs failed (see OUT/errors.jsonl), 130 interrupted (Ctrl-C), 143 terminated
(SIGTERM); both write the summary. Every size and number is checked first (docs/run.md).
"""
from __future__ import annotations

import argparse

from fastpipes.cli.bench import key_value
from fastpipes.errors import InputError
from fastpipes.run import AmgConfig, run_llama, run_sam, run_sdxl
from fastpipes.sam.run import parse_boxes, parse_points

FAMILY_HELP = {
    "sam": "segment images (point / box prompts, a per-image prompt file, or everything)",
    "sdxl": "generate an image per prompt",
    "llama": "complete prompts",
}


def _arg(parse):
    """An argparse type from a parser that raises InputError (keeps its message)."""
    def convert(text: str):
        try:
            return parse(text)
        except InputError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = parse.__name__
    return convert


def _common(p: argparse.ArgumentParser, model_help: str) -> None:
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output directory; rerunning with the same DIR resumes")
    p.add_argument("--recipe", default="auto",
                   help="a built-in recipe name, a YAML path, none (FP32 eager), or auto "
                        "(default: measure the candidates on this machine and keep the fastest "
                        "faithful one)")
    p.add_argument("--set", action="append", default=[], type=key_value, metavar="KEY=VALUE",
                   dest="overrides", help="recipe override, e.g. compile.enabled=false "
                                          "(repeatable)")
    p.add_argument("--model", help=model_help)
    p.add_argument("--random-weights", action="store_true",
                   help="seeded random weights at --model's shape, to try the job out "
                        "(outputs are noise)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ... (default cpu)")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: this process; ray: Ray Data actors (pip install "
                        "'fastpipes[ray]')")
    p.add_argument("--actors", type=int, default=1, help="Ray actors (default 1)")
    p.add_argument("--cpus-per-actor", type=float,
                   help="CPUs per Ray actor (default: the cluster's CPUs shared out)")
    p.add_argument("--address", help="join a Ray cluster: auto, HOST:PORT (e.g. HEAD_IP:6379) "
                                     "or ray://HOST:10001 (default: start a local Ray; see "
                                     "docs/ray.md for token setup)")
    p.add_argument("--quiet", action="store_true", help="no progress display")


def add_parser(subparsers) -> None:
    """Add ``run`` with one sub-command per family (the cli/main.py contract)."""
    run = subparsers.add_parser("run", help="run an accelerated pipeline over your inputs",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    fams = run.add_subparsers(dest="family", metavar="FAMILY", required=True)

    sam = fams.add_parser("sam", help=FAMILY_HELP["sam"])
    sam.add_argument("--images", required=True, metavar="DIR|GLOB",
                     help="a directory (PNG/JPEG, recursively), a quoted glob, or a file")
    sam.add_argument("--points", type=_arg(parse_points), metavar="X,Y[,L];...",
                     help="one prompt of these points on every image (label 1 foreground, "
                          "0 background)")
    sam.add_argument("--boxes", type=_arg(parse_boxes), metavar="X0,Y0,X1,Y1;...",
                     help="one prompt per box on every image")
    sam.add_argument("--prompts", metavar="FILE.json", help="per-image prompts: {\"name.jpg\": "
                     "[{\"points\": [[x, y]], \"labels\": [1]}, {\"box\": [x0, y0, x1, y1]}], "
                     "\"*\": [...]}")
    sam.add_argument("--everything", action="store_true",
                     help="automatic mask generation: a grid of point prompts, deduplicated")
    defaults = AmgConfig()
    for flag, typ, value, text in (
            ("--points-per-side", int, defaults.points_per_side, "grid of N x N prompts"),
            ("--points-per-batch", int, defaults.points_per_batch, "prompts decoded at once"),
            ("--pred-iou-thresh", float, defaults.pred_iou_thresh,
             "keep masks whose predicted IoU is above this"),
            ("--stability-thresh", float, defaults.stability_score_thresh,
             "... and whose stability score is at least this"),
            ("--box-nms-thresh", float, defaults.box_nms_thresh,
             "box IoU above which the lower-scoring mask is a duplicate"),
            ("--crop-layers", int, defaults.crop_n_layers,
             "also segment 2**i x 2**i crops, i = 1..N")):
        sam.add_argument(flag, type=typ, default=value, metavar="N" if typ is int else "X",
                         help=f"--everything: {text} (default {value:g})")
    sam.add_argument("--all-masks", action="store_true",
                     help="keep SAM's three candidate masks per prompt, not only the best")
    sam.add_argument("--no-png", action="store_false", dest="png",
                     help="masks only as RLE in masks.json (no PNG per mask)")
    sam.add_argument("--checkpoint", help="local SAM checkpoint (.pth) of --model")
    _common(sam, "vit_b (default), vit_l or vit_h (tiny: a test shape)")

    sdxl = fams.add_parser("sdxl", help=FAMILY_HELP["sdxl"])
    sdxl.add_argument("--prompts", required=True, metavar="FILE",
                      help="one prompt per line, or JSON lines with prompt and optional seed, "
                           "steps, guidance, width, height, negative_prompt")
    sdxl.add_argument("--steps", type=int, default=30,
                      help="denoising steps per image (default 30; fewer is faster and rougher)")
    sdxl.add_argument("--guidance", type=float, default=5.0,
                      help="classifier-free guidance scale (default 5.0)")
    size = ("pixels, a multiple of 8 (default: the model's: 1024 for SDXL and --random-weights "
            "full, 256 for small, 64 for tiny)")
    sdxl.add_argument("--width", type=int, help=size)
    sdxl.add_argument("--height", type=int, help=size)
    sdxl.add_argument("--negative-prompt", default="")
    _common(sdxl, "a local diffusers SDXL directory (with --random-weights: tiny, small or full)")

    llama = fams.add_parser("llama", help=FAMILY_HELP["llama"])
    llama.add_argument("--prompts", required=True, metavar="FILE",
                       help="one prompt per line, or JSON lines with prompt and optional seed, "
                            "max_new_tokens")
    llama.add_argument("--max-new-tokens", type=int, default=128)
    llama.add_argument("--sample", action="store_true",
                       help="sample (seeded per prompt) instead of greedy decoding")
    llama.add_argument("--temperature", type=float, default=0.8)
    llama.add_argument("--top-p", type=float, default=0.95)
    _common(llama, "a local Hugging Face model directory with a tokenizer (with "
                   "--random-weights: tiny, llama-3.2-1b or llama-2-7b)")
    run.set_defaults(func=run_command)


def run_command(args: argparse.Namespace) -> int:
    """Run the job, print its summary; exit 0 / 1 (some inputs failed) / 130 (interrupted)."""
    common = dict(model=args.model, random_weights=args.random_weights, recipe=args.recipe,
                  overrides=args.overrides, seed=args.seed, device=args.device,
                  engine=args.engine, actors=args.actors, cpus_per_actor=args.cpus_per_actor,
                  address=args.address, progress=not args.quiet)
    if args.family == "sam":
        amg = AmgConfig(points_per_side=args.points_per_side,
                        points_per_batch=args.points_per_batch,
                        pred_iou_thresh=args.pred_iou_thresh,
                        stability_score_thresh=args.stability_thresh,
                        box_nms_thresh=args.box_nms_thresh, crop_n_layers=args.crop_layers)
        summary = run_sam(args.images, args.out, points=args.points, boxes=args.boxes,
                          prompts=args.prompts, everything=args.everything, amg=amg,
                          all_masks=args.all_masks, png=args.png, checkpoint=args.checkpoint,
                          **{**common, "model": args.model or "vit_b"})
    elif args.family == "sdxl":
        summary = run_sdxl(args.prompts, args.out, steps=args.steps, guidance=args.guidance,
                           width=args.width, height=args.height,
                           negative_prompt=args.negative_prompt, **common)
    else:
        summary = run_llama(args.prompts, args.out, max_new_tokens=args.max_new_tokens,
                            sample=args.sample, temperature=args.temperature, top_p=args.top_p,
                            **common)
    print(summary)
    return summary.exit_code
