"""segment-anything (vit_b / vit_l / vit_h): the pipeline and its adapter (``pipeline``,
``predictor``, ``embeddings``), the encoder and click benchmarks (``bench``, ``click``,
``click_casts``), ``fastpipes run sam`` (``run``, ``prompts``, ``amg``, ``nms``, ``image_io``,
``overlay``) and ``fastpipes export sam-onnx`` (``onnx_export``). :data:`FAMILY` describes
it."""
from __future__ import annotations

import torch
import torch.nn as nn

from fastpipes.family import BuildSpec, FamilyDescription
from fastpipes.sam.pipeline import SamAdapter, build_sam


def build(spec: BuildSpec) -> nn.Module:
    """``Sam`` `spec.model` (vit_b, vit_l, vit_h or tiny; default vit_b, or tiny at size tiny)
    with `spec.checkpoint` or seeded random weights, made on `spec.device`."""
    sam = build_sam(spec.model or ("tiny" if spec.size == "tiny" else "vit_b"), spec.checkpoint,
                    seed=spec.seed, device=spec.device)
    return sam if spec.dtype == "float32" else sam.to(dtype=getattr(torch, spec.dtype))


FAMILY = FamilyDescription(
    name="sam", help="Segment Anything: image encoder + prompt encoder + mask decoder",
    build=build, adapter=SamAdapter,
    components=("image_encoder", "prompt_encoder", "mask_decoder"),
    bench="fastpipes.sam.bench:SamWorkload", run="fastpipes.sam.run:SamJob",
    workloads=("encoder", "click"))
