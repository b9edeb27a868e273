"""SDXL benchmark: UNet time per step is the unit (one guidance-batch call as the pipeline
makes it); the VAE decode and an end-to-end generate are timed as extras, and fidelity also
compares the end-to-end image."""
from __future__ import annotations

import time
from dataclasses import fields, replace
from typing import Any

import torch

from fastpipes.bench.workloads.base import Workload, WorkloadSpec
from fastpipes.errors import BenchmarkError
from fastpipes.sdxl.pipeline import UnetInputs, unet_inputs, unet_step
from fastpipes.sdxl.build import SIZES


class SdxlWorkload(Workload):
    """``run`` is one UNet forward on the guidance batch; fidelity is the PSNR of that noise
    prediction vs FP32 and of the image of the end-to-end run ``extra_metrics`` times (same
    seed, prompt and initial latents in every configuration)."""

    unit = "steps"
    bound = "compute"
    OPTIONS = {"resolution": (int, "image side in pixels (default 512; 64 at --size tiny)"),
               "steps": (int, "denoising steps of the end-to-end run (default 4)"),
               "guidance": (float, "classifier-free guidance scale (default 5.0)")}

    def __init__(self, spec: WorkloadSpec):
        super().__init__(spec)
        o = spec.options
        if spec.model is None and spec.size not in SIZES:
            raise BenchmarkError(f"unknown SDXL size {spec.size!r}; allowed: {', '.join(SIZES)}")
        self.resolution = int(o.get("resolution", 512 if spec.size != "tiny" else 64))
        self.steps = int(o.get("steps", 4))
        self.guidance = float(o.get("guidance", 5.0))
        self._images: dict[int, torch.Tensor] = {}  # id(pipe) -> last end-to-end image
        if self.resolution % 8 or self.resolution <= 0:
            raise BenchmarkError(f"resolution must be a positive multiple of 8, got {self.resolution}")
        if self.steps < 1:
            raise BenchmarkError(f"steps must be >= 1, got {self.steps}")

    def describe(self) -> str:
        what = self.spec.model or f"SDXL {self.spec.size} (random weights)"
        b = 2 * self.spec.batch_size
        return (f"{what}: UNet {self.resolution}x{self.resolution}, guidance batch {b}, "
                f"latents {self.resolution // 8}x{self.resolution // 8}; end-to-end {self.steps} steps")

    def inputs(self, pipe: Any) -> UnetInputs:
        made = unet_inputs(pipe, self.resolution, self.spec.batch_size, self.spec.seed)
        # drawn on the CPU (the same values on every device), then moved where the UNet runs
        return replace(made, **{f.name: getattr(made, f.name).to(self.spec.device)
                                for f in fields(made)
                                if isinstance(getattr(made, f.name), torch.Tensor)})

    def run(self, pipe: Any, inputs: UnetInputs) -> torch.Tensor:
        return unet_step(pipe, inputs)

    def items(self, inputs: UnetInputs) -> int:
        return 1  # one denoising step per run

    def view(self, pipe: Any, inputs: UnetInputs, output: torch.Tensor,
             reference: Any = None) -> dict:
        # the image of the end-to-end run that extra_metrics just timed, so image PSNR costs
        # no second generate
        view = super().view(pipe, inputs, output, reference)
        image = self._images.pop(id(pipe), None)
        return view if image is None else {**view, "image": image}

    def flops(self, pipe: Any, inputs: UnetInputs) -> float | None:
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            self.run(pipe, inputs)
        return float(counter.get_total_flops())

    @torch.no_grad()
    def decode(self, pipe: Any, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> image in [0, 1], as the pipeline does it (scaling, VAE dtype)."""
        vae = pipe.vae
        z = latents.to(vae.dtype) / vae.config.scaling_factor
        image = vae.decode(z, return_dict=False)[0]
        return (image.float() / 2 + 0.5).clamp(0, 1)  # [B, 3, H, W]

    @torch.no_grad()
    def generate(self, pipe: Any, inputs: UnetInputs) -> torch.Tensor:
        """The full pipeline call with fixed prompt and initial latents -> image [B, 3, H, W]."""
        out = pipe(inputs.prompt, height=self.resolution, width=self.resolution,
                   num_inference_steps=self.steps, guidance_scale=self.guidance,
                   latents=inputs.latents.clone(), output_type="pt")
        return out.images.float()

    def extra_metrics(self, pipe: Any, inputs: UnetInputs) -> dict[str, float]:
        # the first decode compiles a compiled VAE decoder: timed apart, like compile_s
        t0 = time.perf_counter()
        self.decode(pipe, inputs.latents)
        t1 = time.perf_counter()
        self.decode(pipe, inputs.latents)
        t2 = time.perf_counter()
        self._images[id(pipe)] = self.generate(pipe, inputs)
        t3 = time.perf_counter()
        return {"vae_decode_first_s": t1 - t0, "vae_decode_s": t2 - t1, "end_to_end_s": t3 - t2,
                "end_to_end_steps": float(self.steps)}
