"""SAM benchmark: the image encoder on a seeded batch (1024x1024 at full size); fidelity
compares the embeddings and the masks each configuration decodes for the same prompts."""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from fastpipes.bench.workloads.base import Workload
from fastpipes.family import BuildSpec
from fastpipes.sam import FAMILY
from fastpipes.sam.click import PROMPTS, ClickMixin
from fastpipes.errors import BenchmarkError, InputError
from fastpipes.sam.inputs import sam_inputs, smooth_images
from fastpipes.sam.pipeline import SamShape, sam_of
from fastpipes.sam.predictor import SamPredictor


class SamWorkload(Workload):
    """SAM image encoder on a seeded batch of images (``--size tiny`` for tests)."""

    unit = "images"
    bound = "compute"
    OPTIONS = {"checkpoint": (str, "a local SAM checkpoint (.pth) instead of random weights"),
               "image": (str, "a picture file to segment instead of seeded random images"),
               "points": (int, "point prompts per image that fidelity decodes masks for "
                               "(default 3)"),
               "e2e": (int, "1 (default): also time one end-to-end predict at batch 1; 0: "
                            "skip it (a compiled encoder would compile again for batch 1)"),
               "workload": (str, "encoder (default): the image encoder on a batch; click: one "
                                 "predictor click from a fixed image embedding"),
               "prompt": (str, f"the click's prompt: {', '.join(PROMPTS)} (default point; "
                               "--workload click)"),
               "multimask": (bool, "click with 3 masks (true, default) or 1 (--workload click)")}
    WORKLOADS = FAMILY.workloads

    def __new__(cls, spec):
        if cls is SamWorkload and spec.options.get("workload") == "click":
            return super().__new__(SamClickWorkload)
        return super().__new__(cls)

    def __init__(self, spec):
        super().__init__(spec)
        if spec.size == "tiny" and spec.model not in (None, "tiny"):
            raise BenchmarkError(f"--size tiny builds the tiny SAM; it cannot be combined with "
                                 f"--model {spec.model} (drop one of them)")
        if spec.size == "small":
            raise BenchmarkError("SAM has no 'small' size; allowed: full (with --model vit_b, "
                                 "vit_l or vit_h) or tiny")
        self.model_name = "tiny" if spec.size == "tiny" else (spec.model or "vit_b")
        SamShape.from_name(self.model_name)  # an unknown model fails before any worker
        self.points = int(spec.options.get("points", 3))
        kind = spec.options.get("workload", "encoder")
        if kind not in self.WORKLOADS:
            raise BenchmarkError(f"sam option workload must be one of {', '.join(self.WORKLOADS)}, "
                                 f"got {kind!r}")
        click_only = [k for k in ("prompt", "multimask") if k in spec.options]
        if kind == "encoder" and click_only:
            raise BenchmarkError(f"sam option(s) {', '.join(click_only)} describe a click: "
                                 "add --workload click")

    def describe(self) -> str:
        shape = SamShape.from_name(self.model_name)
        return (f"SAM {self.model_name} image encoder, {shape.image_size}x{shape.image_size}, "
                f"batch {self.spec.batch_size}")

    def build_spec(self) -> BuildSpec:
        return BuildSpec(model=self.model_name, checkpoint=self.spec.options.get("checkpoint"),
                         seed=self.spec.seed, device=self.spec.device)

    def _images_uint8(self, size: int) -> list[np.ndarray]:
        path = self.spec.options.get("image")
        if not path:
            return smooth_images(self.spec.batch_size, size, self.spec.seed)
        try:
            from PIL import Image
        except ImportError as e:
            raise InputError("--image needs pillow (pip install pillow)") from e
        return [np.asarray(Image.open(path).convert("RGB"))] * self.spec.batch_size

    def inputs(self, pipe: Any) -> dict[str, torch.Tensor]:
        sam = sam_of(pipe)
        return sam_inputs(sam, self._images_uint8(sam.image_encoder.img_size), self.points,
                          self.spec.seed, self.spec.device)

    def flops(self, pipe: Any, inputs: dict[str, torch.Tensor]) -> float | None:
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter, torch.inference_mode():
            sam_of(pipe).image_encoder(inputs["images"])
        return float(counter.get_total_flops())

    def extra_metrics(self, pipe: Any, inputs: dict[str, torch.Tensor]) -> dict[str, float]:
        """End-to-end predictor latency: set_image (resize, normalise, encode) + one predict."""
        if not self.spec.options.get("e2e", 1):
            return {}
        pred = SamPredictor(sam_of(pipe))
        img = self._images_uint8(sam_of(pipe).image_encoder.img_size)[0]
        h, w = img.shape[:2]
        t0 = time.perf_counter()
        pred.set_image(img)
        pred.predict(point_coords=np.array([[w / 2, h / 2]]), point_labels=np.array([1]))
        return {"predict_e2e_s": time.perf_counter() - t0}


class SamClickWorkload(ClickMixin, SamWorkload):
    """One SAM predictor click from a fixed image embedding (``--workload click``)."""

    def __init__(self, spec):
        super().__init__(spec)
        self._click_setup()
