"""diffusers SDXL: the builder (``build``), the adapter (``pipeline``), the UNet-step benchmark
(``bench``) and ``fastpipes run sdxl`` (``run``). :data:`FAMILY` describes it."""
from __future__ import annotations

from typing import Any

import torch

from fastpipes.family import BuildSpec, FamilyDescription
from fastpipes.sdxl.build import build_sdxl
from fastpipes.sdxl.pipeline import DiffusersAdapter


def build(spec: BuildSpec) -> Any:
    """A ``StableDiffusionXLPipeline``: the local diffusers directory `spec.model`, or seeded
    random weights at `spec.size` (tiny, small, full), made on `spec.device`."""
    return build_sdxl(spec.size, spec.model, seed=spec.seed, dtype=getattr(torch, spec.dtype),
                      device=spec.device)


FAMILY = FamilyDescription(
    name="sdxl", help="Stable Diffusion XL: UNet steps, VAE decode, text encoders",
    build=build, adapter=DiffusersAdapter,
    components=("unet", "transformer", "vae", "vae_decoder", "text_encoder", "text_encoder_2",
                "text_encoder_3"),
    bench="fastpipes.sdxl.bench:SdxlWorkload", run="fastpipes.sdxl.run:SdxlJob")
