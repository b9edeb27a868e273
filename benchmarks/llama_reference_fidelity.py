"""Fidelity of the Llama recipes on the reference model trained here (trained-tiny).

    PYTHONPATH=$PWD python benchmarks/llama_reference_fidelity.py --windows 64 \
        --variant 'llama_woq_int8:quantize.act_dtype=float32' \
        --variant 'llama_woq_int4:quantize.include_lm_head=false'
    PYTHONPATH=$PWD python benchmarks/llama_reference_fidelity.py \
        --recipes llama_woq_int8,llama_woq_int4,llama_openvino_int8,llama_openvino_int4

Builds trained-tiny on first use (python -m fastpipes.llama.reference build),
reads `--windows` non-overlapping 256-byte windows of its held-out text and compares, per
recipe (each on a fresh FP32 copy), teacher-forced top-1 agreement with FP32 and held-out
perplexity. No timing: the numbers do not depend on how busy the machine is.
A variant is `recipe:override[,override...]`. OpenVINO recipes convert without the cache
(openvino.cache=false), so every run measures a fresh conversion.
"""
from __future__ import annotations

import argparse

import fastpipes
from fastpipes.llama.pipeline import build_llama
from fastpipes.llama.reference import (heldout_batches, heldout_tokens, perplexity,
                                                 read_metadata, reference_dir, teacher_forced,
                                                 top1_agreement)

RECIPES = ["llama_woq_int8", "llama_woq_int4", "llama_int8_dynamic", "llama_bf16"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--windows", type=int, default=64)
    ap.add_argument("--recipes", default=",".join(RECIPES),
                    help="comma-separated recipes (default: %(default)s)")
    ap.add_argument("--variant", action="append", default=[])
    args = ap.parse_args()
    path = reference_dir("trained-tiny")
    meta = read_metadata(path)
    print(f"trained-tiny: {meta['steps']} steps, held-out loss {meta['heldout_loss']:.3f} "
          f"nats/byte, Python {meta['corpus']['python']} stdlib, torch {meta['torch']}")
    tokens = heldout_batches(heldout_tokens(path), 256, args.windows)
    base = teacher_forced(build_llama(str(path)), tokens)
    ppl0 = perplexity(base, tokens)
    top2 = base.topk(2, dim=-1).values
    margin = (top2[..., 0] - top2[..., 1]).median().item()
    print(f"FP32: perplexity {ppl0:.4f}, median top-1 margin {margin:.3f}, "
          f"{tokens[:, 1:].numel()} positions")
    print("| recipe | overrides | top-1 agreement | perplexity | change | mean abs logit error |")
    print("|---|---|---|---|---|---|")
    runs = [(r, []) for r in args.recipes.split(",") if r]
    runs += [(v.split(":")[0], v.split(":", 1)[1].split(",")) for v in args.variant]
    for recipe, overrides in runs:
        model = build_llama(str(path))
        if recipe.startswith("llama_openvino"):
            overrides = [*overrides, "openvino.cache=false"]
        fastpipes.accelerate(model, recipe, overrides=overrides)
        out = teacher_forced(model, tokens)
        ppl = perplexity(out, tokens)
        print(f"| {recipe} | {' '.join(overrides)} | {top1_agreement(base, out):.4f} | {ppl:.4f} | "
              f"{100 * (ppl / ppl0 - 1):+.2f}% | {(out - base).abs().mean().item():.4f} |")


if __name__ == "__main__":
    main()
