"""SAM's prompt encoder + mask decoder as one ONNX model, with the inputs and outputs of
upstream segment-anything's ``scripts/export_onnx_model.py`` (its ``SamOnnxModel``), so code
written for that model (the upstream web demo, onnxruntime notebooks) runs this one.

Inputs: ``image_embeddings`` [1, C, h', w'] (``SamPredictor.get_image_embedding``),
``point_coords`` [1, N, 2] (x, y in the encoder's resized frame: original pixels times
``long_side / max(H, W)``), ``point_labels`` [1, N] (1 foreground, 0 background, 2 / 3 box
corners, -1 padding), ``mask_input`` [1, 1, 4h', 4w'], ``has_mask_input`` [1] (0 or 1),
``orig_im_size`` [2] (H, W as float). Outputs: ``masks`` [1, M, H, W] logits (a mask is
``> 0``), ``iou_predictions`` [1, M], ``low_res_masks`` [1, M, 4h', 4w']; M is 4 (every
mask; upstream's default) or 1 with ``return_single_mask`` (its rule: the best of the three
for one point, the first, multi-click, mask for more).

The boolean index writes of the prompt encoder are the arithmetic masks of
:class:`fastpipes.passes.openvino_sam.PromptPoints` (the same rewrite the OpenVINO pass
converts), so there is one of them in fastpipes.

>>> export_sam_onnx("tiny", "decoder.onnx")   # doctest: +SKIP
PosixPath('decoder.onnx')
"""
from __future__ import annotations

import logging
import os
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from fastpipes.errors import FastpipesError, InputError
from fastpipes.passes.openvino_sam import PromptPoints

INPUTS = ("image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input",
          "orig_im_size")
OUTPUTS = ("masks", "iou_predictions", "low_res_masks")
OPSET = 18  # the dynamo exporter's lowest; onnxruntime >= 1.14 runs it
EXTRA = "pip install 'fastpipes[export]'  (onnx, onnxscript)"


class SamOnnxModel(nn.Module):
    """Prompt encoder -> mask decoder -> masks at the original size, written so it exports
    (no boolean index writes, no Python branches on input values)."""

    def __init__(self, sam: nn.Module, return_single_mask: bool = False):
        super().__init__()
        self.sam = sam
        self.points = PromptPoints(sam.prompt_encoder)
        self.img_size = sam.image_encoder.img_size
        self.return_single_mask = return_single_mask

    def embed_masks(self, mask_input: torch.Tensor, has_mask_input: torch.Tensor) -> torch.Tensor:
        # mask_input: [1, 1, 4h', 4w'] -> [1, C, h', w']; has_mask_input: [1], 0 or 1
        pe = self.sam.prompt_encoder
        no_mask = pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
        return has_mask_input * pe.mask_downscaling(mask_input) + (1 - has_mask_input) * no_mask

    def upscale(self, masks: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
        """[1, M, 4h', 4w'] logits -> [1, M, H, W]: to the encoder's square, the padding cut
        off, then to the original size (``Sam.postprocess_masks``)."""
        s = self.img_size
        masks = F.interpolate(masks, size=(s, s), mode="bilinear", align_corners=False)
        size = orig_im_size.to(torch.float32)
        resized = torch.floor(size * (s / size.max()) + 0.5).to(torch.int64)  # [2] h, w
        rh, rw = resized[0].item(), resized[1].item()
        h, w = orig_im_size.to(torch.int64)[0].item(), orig_im_size.to(torch.int64)[1].item()
        for v, top in ((rh, s), (rw, s), (h, None), (w, None)):
            torch._check(v >= 1)  # tells the exporter the sizes are sizes (no branch here)
            if top is not None:
                torch._check(v <= top)  # ... and the slice stays in the square
        masks = masks[..., :rh, :rw]
        return F.interpolate(masks, size=(h, w), mode="bilinear", align_corners=False)

    def select(self, masks: torch.Tensor, iou: torch.Tensor, n_points: int):
        # one point (+ its padding): the best of the three multimask outputs; more: mask 0.
        # Upstream's arithmetic (no branch on a value): a bonus of +-1000 on mask 0's score
        bonus = torch.zeros_like(iou)
        bonus[:, 0] = 1000.0
        best = torch.argmax(iou + (n_points - 2.5) * bonus, dim=1)  # [1]
        return masks[:, best], iou[:, best]

    @torch.no_grad()
    def forward(self, image_embeddings, point_coords, point_labels, mask_input,
                has_mask_input, orig_im_size):
        sparse = self.points(point_coords, point_labels)  # [1, N, C]
        dense = self.embed_masks(mask_input, has_mask_input)
        low_res, iou = self.sam.mask_decoder.predict_masks(
            image_embeddings=image_embeddings, image_pe=self.sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense)
        if self.return_single_mask:
            low_res, iou = self.select(low_res, iou, point_coords.shape[1])
        return self.upscale(low_res, orig_im_size), iou, low_res


def example_inputs(sam: nn.Module, n_points: int = 2) -> tuple[torch.Tensor, ...]:
    """Inputs of one call (INPUTS' order): a random embedding, `n_points` points."""
    pe = sam.prompt_encoder
    h, w = pe.image_embedding_size
    g = torch.Generator().manual_seed(0)
    s = sam.image_encoder.img_size
    return (torch.randn(1, pe.embed_dim, h, w, generator=g),
            torch.rand(1, n_points, 2, generator=g) * s,
            torch.tensor([[1.0] + [0.0] * (n_points - 1)]),
            torch.randn(1, 1, 4 * h, 4 * w, generator=g),
            torch.tensor([1.0]),
            torch.tensor([s * 0.75, float(s)]))


def onnx_missing() -> str | None:
    """Why this environment cannot export (the packages the extra installs), or None."""
    missing = []
    for module in ("onnx", "onnxscript"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    return f"ONNX export needs {' and '.join(missing)}: {EXTRA}" if missing else None


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter's chatter kept from the user's output, restored after: deprecation
    warnings, and a log line per torchvision op it cannot register (SAM uses none)."""
    log = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)


def export_sam_onnx(model: str | nn.Module, out: str | Path, *, checkpoint: str | None = None,
                    return_single_mask: bool = False, seed: int = 0) -> Path:
    """Write SAM `model`'s prompt encoder + mask decoder (upstream ``SamOnnxModel``'s inputs
    and outputs; the number of points is dynamic) to `out` as ONNX; returns the path.

    `model`: vit_b | vit_l | vit_h | tiny (with `checkpoint`, or seeded random weights) or a
    built ``Sam``. The image encoder is not exported: run it in PyTorch
    (``SamPredictor.set_image`` then ``get_image_embedding``) or keep embeddings on disk.

    >>> export_sam_onnx("vit_b", "sam_decoder.onnx", checkpoint="sam_vit_b_01ec64.pth")  # doctest: +SKIP
    """
    why = onnx_missing()
    if why:
        raise FastpipesError(why)
    out = Path(out).expanduser()
    if out.suffix != ".onnx":
        raise InputError(f"--out {out}: name the file *.onnx")
    if isinstance(model, str):
        from fastpipes.sam.pipeline import build_sam

        if checkpoint and not Path(checkpoint).expanduser().is_file():
            raise InputError(f"--checkpoint {checkpoint}: no such file")
        model = build_sam(model, checkpoint, seed=seed)
    wrapper = SamOnnxModel(model.float().eval(), return_single_mask).eval()
    n = torch.export.Dim("num_points", min=1, max=64)
    shapes = {name: None for name in INPUTS}
    shapes.update(point_coords={1: n}, point_labels={1: n})
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with _quiet_exporter():
            program = torch.onnx.export(wrapper, example_inputs(model), dynamo=True,
                                        input_names=list(INPUTS), output_names=list(OUTPUTS),
                                        dynamic_shapes=shapes, opset_version=OPSET,
                                        external_data=False, verbose=False)
        program.save(str(tmp), external_data=False)
        import onnx

        onnx.checker.check_model(str(tmp), full_check=True)  # a file onnx itself accepts
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
