"""Automatic mask generation ("segment everything") without torchvision.

The algorithm of segment-anything's ``SamAutomaticMaskGenerator``: a grid of single-point
prompts over the image (and optionally over overlapping crops), decoded in batches from one
image embedding per crop; masks kept when the model's predicted IoU and the mask's
stability are high enough; duplicates removed by box NMS. The grid, crop, stability, box
and RLE helpers are upstream's ``segment_anything.utils.amg`` (numpy + torch only); NMS is
:mod:`fastpipes.sam.nms`; decoding is fastpipes' own :class:`SamPredictor`, so an
accelerated ``Sam`` is used as it is.

>>> pred = SamPredictor(build_sam("tiny"))                         # doctest: +SKIP
>>> masks = generate_masks(pred, image, AmgConfig(points_per_side=8))  # doctest: +SKIP
>>> masks[0]["segmentation"]["counts"][:8], masks[0]["predicted_iou"]  # doctest: +SKIP
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from types import ModuleType
from typing import Any, Callable

import numpy as np
import torch

from fastpipes.bounds import check_int, fits_type
from fastpipes.errors import InputError
from fastpipes.progress import detail
from fastpipes.sam.pipeline import sam_submodule
from fastpipes.sam.predictor import SamPredictor
from fastpipes.sam.nms import batched_nms, box_area


@dataclass(frozen=True)
class AmgConfig:
    """Settings of automatic mask generation (upstream's names and defaults, except a
    smaller ``points_per_batch``: each prompt's three masks are held as FP32 logits at the
    full image size, 48 MB per prompt for a 2048 x 2048 picture)."""

    points_per_side: int = 32  # grid of points_per_side**2 single-point prompts
    points_per_batch: int = 16  # prompts decoded at once
    pred_iou_thresh: float = 0.88  # keep masks whose predicted IoU is above this
    stability_score_thresh: float = 0.95  # ... and whose stability score is at least this
    stability_score_offset: float = 1.0  # logit shift the stability score is measured over
    box_nms_thresh: float = 0.7  # box IoU above which a lower-scoring mask is a duplicate
    crop_n_layers: int = 0  # > 0: also run on 2**i x 2**i crops for i in 1..n
    crop_nms_thresh: float = 0.7  # duplicates between crops
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1

    def __post_init__(self):
        bad = []
        for name in ("points_per_side", "points_per_batch", "crop_n_layers",
                     "crop_n_points_downscale_factor"):
            try:
                check_int(name, getattr(self, name))
            except InputError as e:
                bad.append(str(e))
        for name in ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh",
                     "crop_nms_thresh", "crop_overlap_ratio"):
            value = getattr(self, name)  # NaN fails the comparison too
            if not fits_type(value, float) or not 0.0 <= value <= 1.0:
                bad.append(f"{name}={value!r} (must be a number in [0, 1])")
        if not isinstance(self.stability_score_offset, (int, float)) or \
                not math.isfinite(self.stability_score_offset):
            bad.append(f"stability_score_offset={self.stability_score_offset!r} (must be finite)")
        if bad:
            raise InputError("automatic mask generation settings: " + "; ".join(bad))

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def generate_masks(predictor: SamPredictor, image: np.ndarray, cfg: AmgConfig,
                   set_image: Callable[[np.ndarray], Any] | None = None) -> list[dict]:
    """Every mask SAM finds in `image` (H x W x 3 uint8), best predicted IoU first.
    `set_image` sets the whole image on `predictor` (default ``predictor.set_image``; the run
    job's may load a saved embedding instead); crops are always encoded.

    Each record: ``segmentation`` (COCO RLE, counts as str), ``area``, ``bbox`` (XYWH),
    ``predicted_iou``, ``stability_score``, ``point_coords`` ([[x, y]], the prompt),
    ``crop_box`` (XYWH). Leaves no image set on `predictor`. Minutes per image at the
    default settings on a CPU: how far it got goes to the running heartbeat, if any
    (fastpipes.progress.detail, e.g. ``automatic masks, crop 1/1: 12/64 prompt batches
    done``).
    """
    amg = sam_submodule("utils.amg")
    h, w = image.shape[:2]
    grids = amg.build_all_layer_point_grids(cfg.points_per_side, cfg.crop_n_layers,
                                            cfg.crop_n_points_downscale_factor)
    crop_boxes, layers = amg.generate_crop_boxes((h, w), cfg.crop_n_layers,
                                                 cfg.crop_overlap_ratio)
    data, found = amg.MaskData(), False
    with torch.inference_mode():
        for i, (crop, layer) in enumerate(zip(crop_boxes, layers), 1):
            where = f"automatic masks, crop {i}/{len(crop_boxes)}"
            encode = set_image if layer == 0 and set_image is not None else predictor.set_image
            crop_data = _crop_masks(amg, predictor, image, crop, grids[layer], cfg, encode, where)
            if crop_data is not None:
                data.cat(crop_data)
                found = True
        if not found:
            return []
        if len(crop_boxes) > 1:  # the same object seen in several crops: keep the smaller crop's
            crop_scores = 1.0 / box_area(data["crop_boxes"].float())
            data.filter(batched_nms(data["boxes"], crop_scores,
                                    torch.zeros(len(data["boxes"])), cfg.crop_nms_thresh))
    records = []
    for i in range(len(data["rles"])):
        records.append({
            "segmentation": amg.coco_encode_rle(data["rles"][i]),
            "area": int(amg.area_from_rle(data["rles"][i])),
            "bbox": amg.box_xyxy_to_xywh(data["boxes"][i]).tolist(),
            "predicted_iou": float(data["iou_preds"][i]),
            "stability_score": float(data["stability_score"][i]),
            "point_coords": [data["points"][i].tolist()],
            "crop_box": amg.box_xyxy_to_xywh(data["crop_boxes"][i]).tolist(),
        })
    records.sort(key=lambda r: -r["predicted_iou"])
    return records


def _crop_masks(amg: ModuleType, predictor: SamPredictor, image: np.ndarray, crop: list[int],
                grid: np.ndarray, cfg: AmgConfig, set_image: Callable[[np.ndarray], Any],
                where: str) -> Any:
    """MaskData of one crop in full-image coordinates (None when nothing survived)."""
    x0, y0, x1, y1 = crop
    crop_image = np.ascontiguousarray(image[y0:y1, x0:x1])
    detail(f"{where}: encoding the image")
    set_image(crop_image)  # one embedding, reused by every batch of prompts
    ch, cw = crop_image.shape[:2]
    points = grid * np.array([[cw, ch]])  # grid is (x, y) in [0, 1]
    data = amg.MaskData()
    batches = math.ceil(len(points) / cfg.points_per_batch)
    try:
        for b, (batch,) in enumerate(amg.batch_iterator(cfg.points_per_batch, points)):
            detail(f"{where}: {b}/{batches} prompt batches done")
            data.cat(_batch_masks(amg, predictor, batch, crop, image.shape[:2], cfg))
    finally:
        predictor.reset_image()
    if not data["rles"]:
        return None
    data.filter(batched_nms(data["boxes"], data["iou_preds"], torch.zeros(len(data["boxes"])),
                            cfg.box_nms_thresh))
    data["boxes"] = amg.uncrop_boxes_xyxy(data["boxes"], crop)
    data["points"] = amg.uncrop_points(data["points"], crop)
    data["crop_boxes"] = torch.tensor([crop] * len(data["rles"]))  # [M, 4]
    return data


def _batch_masks(amg: ModuleType, predictor: SamPredictor, points: np.ndarray,
                 crop: list[int], size: tuple[int, int], cfg: AmgConfig) -> Any:
    h, w = size
    threshold = predictor.model.mask_threshold
    # points: [P, 2] -> P prompts of one foreground point, three candidate masks each
    logits, iou, _ = predictor.predict_prompts(points[:, None, :], np.ones((len(points), 1)),
                                               multimask_output=True, return_logits=True)
    data = amg.MaskData(masks=logits.flatten(0, 1),  # [P*3, ch, cw]
                        iou_preds=iou.flatten(0, 1),
                        points=torch.as_tensor(points.repeat(logits.shape[1], axis=0)))
    if cfg.pred_iou_thresh > 0:
        data.filter(data["iou_preds"] > cfg.pred_iou_thresh)
    data["stability_score"] = amg.calculate_stability_score(data["masks"], threshold,
                                                            cfg.stability_score_offset)
    if cfg.stability_score_thresh > 0:
        data.filter(data["stability_score"] >= cfg.stability_score_thresh)
    data["masks"] = data["masks"] > threshold
    data["boxes"] = amg.batched_mask_to_box(data["masks"])
    # a mask cut by a crop's inner edge is only part of an object: another crop has it whole
    near_edge = amg.is_box_near_crop_edge(data["boxes"], crop, [0, 0, w, h])
    if near_edge.any():
        data.filter(~near_edge)
    data["rles"] = amg.mask_to_rle_pytorch(amg.uncrop_masks(data["masks"], crop, h, w))
    del data["masks"]
    return data
