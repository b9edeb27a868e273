"""Any ``torch.nn.Module``: the generic adapter (``adapter``), the toy model (``toy``) and its
benchmark workload (``bench``, ``fastpipes bench toy``): the smallest complete family, and the
worked example of docs/adding-a-family.md. :data:`FAMILY` describes it."""
from __future__ import annotations

import torch

from fastpipes.family import BuildSpec, FamilyDescription
from fastpipes.generic.adapter import GenericAdapter
from fastpipes.generic.toy import ToyNet, build_toy


def build(spec: BuildSpec) -> ToyNet:
    """The toy conv + MLP at `spec.size` (tiny, small, full), seeded, on `spec.device`."""
    return build_toy(spec.size, seed=spec.seed, device=spec.device,
                     dtype=getattr(torch, spec.dtype))


FAMILY = FamilyDescription(
    name="generic", command="toy",
    help="a tiny seeded conv+MLP (smoke runs of the harness; no model library needed)",
    build=build, adapter=GenericAdapter, components=None,  # generic recipes: any model
    bench="fastpipes.generic.bench:ToyWorkload")
