"""A SAM predictor with the upstream ``SamPredictor`` semantics that needs only torch + numpy.

``set_image`` resizes the longest side to the encoder size (antialiased bilinear, via
torch), normalises, pads and runs the image encoder once; ``predict`` decodes masks for
point / box / mask prompts given in original-image pixels. ``predict_batch`` encodes
several images in one batch and decodes many prompts per image at once.

>>> from fastpipes.sam.pipeline import build_sam
>>> pred = SamPredictor(build_sam("tiny"))
>>> pred.set_image(np.zeros((60, 90, 3), np.uint8))
>>> masks, scores, logits = pred.predict(np.array([[45, 30]]), np.array([1]))
>>> masks.shape, scores.shape, logits.shape
((3, 60, 90), (3,), (3, 32, 32))
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from fastpipes.errors import InputError
from fastpipes.sam import embeddings


def preprocess_shape(h: int, w: int, long_side: int) -> tuple[int, int]:
    """(h, w) after resizing the longest side to `long_side` (upstream rounding)."""
    scale = long_side / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def check_image(image: Any) -> None:
    if not isinstance(image, np.ndarray):
        raise InputError(f"image must be a numpy array (H x W x 3, uint8), got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"image must have shape H x W x 3 (RGB), got {image.shape}")
    if image.dtype != np.uint8:
        raise InputError(f"image must be uint8 (0-255), got dtype {image.dtype}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InputError(f"image is empty: shape {image.shape}")


def resize_longest(image: np.ndarray, long_side: int) -> torch.Tensor:
    """H x W x 3 uint8 -> [1, 3, h, w] float with values of a uint8 resize (like PIL's)."""
    h, w = preprocess_shape(image.shape[0], image.shape[1], long_side)
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    if (h, w) != tuple(image.shape[:2]):
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        x = x.round().clamp(0, 255)  # upstream resizes uint8 pictures
    return x


def preprocess_image(sam: torch.nn.Module, image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
    """([1, 3, S, S] normalised + padded input of the encoder, resized (h, w))."""
    check_image(image)
    x = resize_longest(image, sam.image_encoder.img_size)
    input_size = tuple(x.shape[-2:])
    x = x.to(sam.pixel_mean.device)
    # contiguous NCHW, as upstream's predictor passes it: a compiled encoder guards on
    # strides, so the resize's HWC-derived layout would compile a second graph
    return sam.preprocess(x).contiguous(), input_size


@dataclass
class _ImageState:
    features: torch.Tensor  # [1, C, h', w'] image embedding
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    # [1, C, h', w'] dense positional encoding: it depends only on the prompt encoder, so it
    # is made once per image, not per click (get_dense_pe builds a 64x64 grid each call)
    image_pe: torch.Tensor | None = None


def _state(sam: torch.nn.Module, features: torch.Tensor, original_size, input_size) -> _ImageState:
    return _ImageState(features, tuple(original_size), tuple(input_size),
                       sam.prompt_encoder.get_dense_pe())


class SamPredictor:
    """``set_image`` once, ``predict`` many times (upstream SamPredictor semantics).

    Coordinates are (x, y) pixels of the original image; boxes are XYXY.
    """

    def __init__(self, sam_model: torch.nn.Module):
        self.model = sam_model
        self._state: _ImageState | None = None

    @property
    def device(self) -> torch.device:
        return self.model.pixel_mean.device

    @property
    def is_image_set(self) -> bool:
        return self._state is not None

    def reset_image(self) -> None:
        self._state = None

    @torch.inference_mode()
    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """Encode an H x W x 3 uint8 picture (RGB, or BGR with image_format='BGR')."""
        if image_format not in ("RGB", "BGR"):
            raise InputError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        check_image(image)
        if image_format != self.model.image_format:
            image = image[..., ::-1]
        x, input_size = preprocess_image(self.model, image)
        self._state = _state(self.model, self.model.image_encoder(x), image.shape[:2], input_size)

    @torch.inference_mode()
    def set_features(self, features: torch.Tensor, original_size: tuple[int, int]) -> None:
        """Use an image embedding computed before (``features`` [1, C, h', w'] from this
        model's image encoder) for a picture of `original_size` (h, w): clicks without
        encoding again, e.g. an embedding kept from an earlier session."""
        want = (self.model.prompt_encoder.embed_dim, *self.model.prompt_encoder.image_embedding_size)
        if not isinstance(features, torch.Tensor) or tuple(features.shape) != (1, *want):
            got = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
            raise InputError(f"features must be a [1, {want[0]}, {want[1]}, {want[2]}] tensor "
                             f"from this model's image encoder, got {got}")
        h, w = (int(v) for v in original_size)
        if h < 1 or w < 1:
            raise InputError(f"original_size must be (height, width) >= 1, got {original_size}")
        input_size = preprocess_shape(h, w, self.model.image_encoder.img_size)
        self._state = _state(self.model, features.to(self.device), (h, w), input_size)

    def get_image_embedding(self) -> torch.Tensor:
        """The set image's embedding [1, C, h', w'] (upstream's name)."""
        if self._state is None:
            raise InputError("call set_image(image) before get_image_embedding()")
        return self._state.features

    def save_embedding(self, path: str | Path, image: np.ndarray | None = None) -> Path:
        """Keep the set image's embedding in a file, for :meth:`load_embedding` later (by
        this or another process with the same checkpoint): clicks without the encoder.
        `image`: the picture that was set, to record which one it was (its pixels' hash)."""
        if self._state is None:
            raise InputError("call set_image(image) before save_embedding()")
        digest = None if image is None else embeddings.image_digest(image)
        return embeddings.save(self.model, self._state.features, self._state.original_size,
                               path, image=digest)

    def load_embedding(self, path: str | Path, image: np.ndarray | None = None) -> None:
        """Set the image from an embedding file saved by :meth:`save_embedding`; refused
        (InputError) when another image encoder made it, or, given `image`, when the file
        was not saved from that picture."""
        digest = None if image is None else embeddings.image_digest(image)
        features, size = embeddings.load(self.model, path, image=digest)
        self.set_features(features, size)

    def _to_model_coords(self, coords: np.ndarray, state: _ImageState) -> np.ndarray:
        (oh, ow), (nh, nw) = state.original_size, state.input_size
        out = coords.astype(np.float64).copy()
        out[..., 0] *= nw / ow
        out[..., 1] *= nh / oh
        return out

    def _check_prompts(self, point_coords, point_labels, box, state: _ImageState):
        h, w = state.original_size
        if (point_coords is None) != (point_labels is None):
            raise InputError("point_coords and point_labels must be given together")
        if point_coords is not None:
            point_coords = np.asarray(point_coords, dtype=np.float64)
            point_labels = np.asarray(point_labels)
            if point_coords.ndim < 2 or point_coords.shape[-1] != 2:
                raise InputError(f"point_coords must be N x 2 (x, y), got {point_coords.shape}")
            if point_labels.shape != point_coords.shape[:-1]:
                raise InputError(f"point_labels must have shape {point_coords.shape[:-1]} "
                                 f"(one label per point), got {point_labels.shape}")
            if not np.isin(point_labels, (0, 1, -1)).all():
                raise InputError("point_labels must be 1 (foreground), 0 (background) or -1 (pad)")
            xs, ys = point_coords[..., 0], point_coords[..., 1]
            if (xs < 0).any() or (ys < 0).any() or (xs > w).any() or (ys > h).any():
                raise InputError(f"point_coords outside the image (width {w}, height {h}): "
                                 f"x in [{xs.min()}, {xs.max()}], y in [{ys.min()}, {ys.max()}]")
        if box is not None:
            box = np.asarray(box, dtype=np.float64)
            if box.shape[-1] != 4:
                raise InputError(f"box must be XYXY with last dim 4, got shape {box.shape}")
            b = box.reshape(-1, 4)
            if (b[:, 0] > b[:, 2]).any() or (b[:, 1] > b[:, 3]).any():
                raise InputError("box must be x0 <= x1 and y0 <= y1 (XYXY)")
            if (b < 0).any() or (b[:, [0, 2]] > w).any() or (b[:, [1, 3]] > h).any():
                raise InputError(f"box outside the image (width {w}, height {h}): {b.tolist()}")
        return point_coords, point_labels, box

    @torch.inference_mode()
    def _decode(self, state: _ImageState, coords, labels, boxes, mask_input, multimask_output,
                return_logits):
        # coords: [P, N, 2], labels: [P, N], boxes: [P, 4], mask_input: [P, 1, 256, 256]
        dev = self.device
        points = None
        if coords is not None:
            points = (torch.as_tensor(self._to_model_coords(coords, state), dtype=torch.float, device=dev),
                      torch.as_tensor(labels, dtype=torch.int, device=dev))
        box_t = None
        if boxes is not None:
            b = self._to_model_coords(boxes.reshape(-1, 2, 2), state).reshape(-1, 4)
            box_t = torch.as_tensor(b, dtype=torch.float, device=dev)
        mask_t = None if mask_input is None else torch.as_tensor(mask_input, dtype=torch.float,
                                                                  device=dev)
        return self._decode_tensors(state, points, box_t, mask_t, multimask_output, return_logits)

    def _decode_tensors(self, state: _ImageState, points, box_t, mask_t, multimask_output,
                        return_logits):
        """Prompt encoder -> mask decoder -> postprocess on prompts in model coordinates;
        the three parts the click benchmark times one by one (sam/click)."""
        sparse, dense = self._prompt_encoder(points, box_t, mask_t)
        low_res, iou = self._mask_decoder(state, sparse, dense, multimask_output)
        return self._postprocess(state, low_res, iou, return_logits)

    def _prompt_encoder(self, points, box_t, mask_t):
        return self.model.prompt_encoder(points=points, boxes=box_t, masks=mask_t)

    def _mask_decoder(self, state: _ImageState, sparse, dense, multimask_output):
        image_pe = state.image_pe
        if image_pe is None:  # a state made before image_pe was kept
            image_pe = self.model.prompt_encoder.get_dense_pe()
        return self.model.mask_decoder(image_embeddings=state.features, image_pe=image_pe,
                                       sparse_prompt_embeddings=sparse,
                                       dense_prompt_embeddings=dense,
                                       multimask_output=multimask_output)

    def _postprocess(self, state: _ImageState, low_res, iou, return_logits):
        sam = self.model
        low_res, iou = low_res.float(), iou.float()  # no-ops for FP32 outputs
        masks = sam.postprocess_masks(low_res, state.input_size, state.original_size)
        if not return_logits:
            masks = masks > sam.mask_threshold
        return masks, iou, low_res

    def predict(self, point_coords: np.ndarray | None = None,
                point_labels: np.ndarray | None = None, box: np.ndarray | None = None,
                mask_input: np.ndarray | None = None, multimask_output: bool = True,
                return_logits: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks [C, H, W] (bool), scores [C], low-res logits [C, 256, 256] for one prompt.

        point_coords: N x 2 (x, y) pixels; point_labels: N (1 foreground, 0 background);
        box: 4 (XYXY); mask_input: 1 x 256 x 256 logits from a previous call.
        """
        if self._state is None:
            raise InputError("call set_image(image) before predict()")
        coords, labels, box = self._check_prompts(point_coords, point_labels, box, self._state)
        if coords is not None:
            coords, labels = coords.reshape(1, -1, 2), labels.reshape(1, -1)
        if box is not None:
            box = box.reshape(1, 4)
        if mask_input is not None:
            mask_input = np.asarray(mask_input)[None]
        masks, iou, low = self._decode(self._state, coords, labels, box, mask_input,
                                       multimask_output, return_logits)
        return masks[0].cpu().numpy(), iou[0].cpu().numpy(), low[0].cpu().numpy()

    def predict_prompts(self, point_coords: np.ndarray | None = None,
                        point_labels: np.ndarray | None = None, boxes: np.ndarray | None = None,
                        multimask_output: bool = True, return_logits: bool = False
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """P prompts on the set image in one decoder batch, as torch tensors.

        point_coords: P x N x 2 (x, y) original-image pixels, point_labels: P x N, and/or
        boxes: P x 4 (XYXY). Returns masks [P, C, H, W] (bool, or logits with
        `return_logits`), scores [P, C], low-res logits [P, C, 256, 256].
        """
        if self._state is None:
            raise InputError("call set_image(image) before predict_prompts()")
        coords, labels, boxes = self._check_prompts(point_coords, point_labels, boxes,
                                                    self._state)
        if coords is None and boxes is None:
            raise InputError("predict_prompts needs point_coords/point_labels or boxes")
        if coords is not None and coords.ndim != 3:
            raise InputError(f"point_coords must be P x N x 2, got {coords.shape}")
        return self._decode(self._state, coords, labels,
                            None if boxes is None else boxes.reshape(-1, 4), None,
                            multimask_output, return_logits)

    @torch.inference_mode()
    def predict_batch(self, images: Sequence[np.ndarray], point_coords: Sequence[Any] | None = None,
                      point_labels: Sequence[Any] | None = None, boxes: Sequence[Any] | None = None,
                      multimask_output: bool = False) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Several images in one encoder batch; many prompts per image in one decoder batch.

        For image i: point_coords[i] is P x N x 2 and point_labels[i] P x N (P prompts of N
        points), and/or boxes[i] is P x 4. Returns, per image, (masks [P, C, H, W],
        scores [P, C], low-res logits [P, C, 256, 256]). Leaves the set image untouched.
        """
        if not images:
            raise InputError("predict_batch needs at least one image")
        n = len(images)
        for name, seq in (("point_coords", point_coords), ("point_labels", point_labels),
                          ("boxes", boxes)):
            if seq is not None and len(seq) != n:
                raise InputError(f"{name} must have one entry per image ({n}), got {len(seq)}")
        if point_coords is None and boxes is None:
            raise InputError("predict_batch needs point_coords/point_labels or boxes")
        xs, sizes = [], []
        for im in images:
            x, input_size = preprocess_image(self.model, im)
            xs.append(x)
            sizes.append((tuple(im.shape[:2]), input_size))
        feats = self.model.image_encoder(torch.cat(xs))  # [n, C, h', w']
        image_pe = self.model.prompt_encoder.get_dense_pe()  # the same for every image
        out = []
        for i in range(n):
            state = _ImageState(feats[i:i + 1], *sizes[i], image_pe)
            c = None if point_coords is None else point_coords[i]
            lab = None if point_labels is None else point_labels[i]
            b = None if boxes is None else boxes[i]
            c, lab, b = self._check_prompts(c, lab, b, state)
            if c is not None and c.ndim == 2:  # one prompt of N points
                c, lab = c[None], lab[None]
            masks, iou, low = self._decode(state, c, lab, None if b is None else b.reshape(-1, 4),
                                           None, multimask_output, False)
            out.append((masks.cpu().numpy(), iou.cpu().numpy(), low.cpu().numpy()))
        return out
