"""``fastpipes export``: a pipeline's parts as files other runtimes load.

    fastpipes export sam-onnx --model vit_b --checkpoint sam_vit_b_01ec64.pth --out sam_decoder.onnx
    fastpipes export sam-onnx --model tiny --random-weights --out /tmp/tiny.onnx   # try it out

sam-onnx writes SAM's prompt encoder + mask decoder with the inputs and outputs of upstream
segment-anything's ONNX model (scripts/export_onnx_model.py), for onnxruntime, the upstream
web demo and the like; the image encoder stays in PyTorch (docs/sam.md, "ONNX export").
Needs the export extra: pip install 'fastpipes[export]'.
"""
from __future__ import annotations

import argparse

from fastpipes.cli import SUBCOMMANDS
from fastpipes.errors import InputError
from fastpipes.sam.onnx_export import OPSET, export_sam_onnx
from fastpipes.sam.pipeline import SAM_SHAPES


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("export", help=SUBCOMMANDS["export"],
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", metavar="WHAT", required=True)
    sam = sub.add_parser("sam-onnx", help="SAM prompt encoder + mask decoder (upstream's "
                                          f"SamOnnxModel inputs and outputs, opset {OPSET})")
    sam.add_argument("--model", required=True, choices=list(SAM_SHAPES),
                     help="the SAM shape (tiny: a test shape)")
    sam.add_argument("--checkpoint", metavar="PATH", help="the model's .pth")
    sam.add_argument("--random-weights", action="store_true",
                     help="seeded random weights instead of --checkpoint (to try it out)")
    sam.add_argument("--seed", type=int, default=0, help="with --random-weights (default 0)")
    sam.add_argument("--single-mask", action="store_true",
                     help="return one mask (upstream's --return-single-mask), not all four")
    sam.add_argument("--out", required=True, metavar="FILE.onnx")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.random_weights == bool(args.checkpoint):
        raise InputError("sam-onnx needs --checkpoint FILE (the model's .pth) or, to try it "
                         "out, --random-weights; not " + ("both" if args.checkpoint else "neither"))
    path = export_sam_onnx(args.model, args.out, checkpoint=args.checkpoint,
                           return_single_mask=args.single_mask, seed=args.seed)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB): SAM {args.model} prompt "
          f"encoder + mask decoder, opset {OPSET}")
    return 0
