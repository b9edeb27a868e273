"""python -m fastpipes.llama.reference build [--force] [--steps N] [--max-minutes M] | info"""
from __future__ import annotations

import argparse
import json
import sys

from fastpipes.llama.reference.models import (REFERENCE_MODELS, is_current,
                                                        read_metadata, reference_dir, spec_of,
                                                        stored_dir, trained_for)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fastpipes.llama.reference",
                                 description="Build or describe a reference Llama trained here "
                                             "(stored in the fastpipes cache, part 'models').")
    ap.add_argument("command", choices=["build", "info"])
    ap.add_argument("--name", default="trained-tiny", choices=sorted(REFERENCE_MODELS))
    ap.add_argument("--force", action="store_true", help="build: train again even if stored")
    ap.add_argument("--steps", type=int, default=None,
                    help="build: optimizer steps (default: the model's spec; more steps, "
                         "sharper logits)")
    ap.add_argument("--max-minutes", type=float, default=None,
                    help="build: fit the training into about this many minutes (fewer steps)")
    args = ap.parse_args(argv)
    if args.max_minutes is not None and not args.max_minutes > 0:
        ap.error(f"--max-minutes must be a number > 0, got {args.max_minutes}")
    if args.steps is not None and args.steps < 1:
        ap.error(f"--steps must be >= 1, got {args.steps}")
    path = (reference_dir(args.name, force=args.force, max_minutes=args.max_minutes,
                          steps=args.steps)
            if args.command == "build" else stored_dir(args.name))
    meta = read_metadata(path)
    if meta is None:
        print(f"{args.name}: not built yet (it goes to {path}); build it with: python -m "
              f"fastpipes.llama.reference build --name {args.name}")
        return 1
    meta.pop("heldout_file_names", None)
    stale = "" if is_current(path, spec_of(args.name)) else \
        " (trained from another spec: the next use rebuilds it)"
    print(f"{args.name}: {path}{stale}")
    print(trained_for(meta))
    print(json.dumps(meta, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
