"""Image embeddings kept and reused: a predictor's embedding saved to a file and loaded back,
so clicks on an image encoded earlier (in another process, on another day) need no encoder
call — the expensive half of SAM.

A file holds the [1, C, h', w'] embedding (FP32), the picture's original size and a
fingerprint of the image encoder that made it; it is read with ``torch.load(...,
weights_only=True)`` (plain tensors and values only: no code) and refused with the reason when
the predictor's encoder is another one or the file is not an embedding.

>>> predictor.set_image(image); predictor.save_embedding("photo.sam.pt")   # doctest: +SKIP
>>> later.load_embedding("photo.sam.pt"); later.predict(point_coords=...)  # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastpipes.errors import InputError
from fastpipes.files import atomic_file
from fastpipes.fingerprint import structure_signature

FORMAT = "fastpipes-sam-embedding/1"


def encoder_fingerprint(sam: torch.nn.Module) -> str:
    """Which image encoder (architecture and weights) made an embedding, cheaply: its
    structure with dtypes left out, and the weights of its first layer (patch embedding) and
    its neck rounded to BF16 — the same for a checkpoint in FP32 or cast to BF16 by a recipe,
    different for another checkpoint."""
    enc = sam.image_encoder
    shape = [[n, s] for n, s, _ in structure_signature({"e": enc})[0][3]]
    h = hashlib.sha256(json.dumps(shape).encode())
    for t in (enc.patch_embed.proj.weight, *enc.neck.parameters()):
        h.update(t.detach().to("cpu", torch.bfloat16).view(torch.int16).numpy().tobytes())
    return h.hexdigest()[:16]


def image_digest(image: np.ndarray) -> str:
    """Which picture an embedding was made from: a hash of its pixels and shape (the same
    pixels read from a PNG or a copy of it give the same digest; an edited file does not)."""
    h = hashlib.sha256(repr((image.shape, str(image.dtype))).encode())
    h.update(np.ascontiguousarray(image).data)
    return h.hexdigest()[:16]


def save(sam: torch.nn.Module, features: torch.Tensor, original_size: tuple[int, int],
         path: str | Path, image: str | None = None) -> Path:
    """Write an embedding file (atomically: a reader never sees half of one); `image`: the
    picture's :func:`image_digest`, when known, so a later load can check it is the same."""
    path = Path(path)
    blob = {"format": FORMAT, "features": features.detach().float().cpu().contiguous(),
            "original_size": [int(v) for v in original_size],
            "encoder": encoder_fingerprint(sam)}
    if image is not None:
        blob["image"] = image
    return atomic_file(path, lambda tmp: torch.save(blob, tmp))


def load(sam: torch.nn.Module, path: str | Path,
         image: str | None = None) -> tuple[torch.Tensor, tuple[int, int]]:
    """(features, original size) from an embedding file made by this model's encoder (and,
    with `image`, from the picture of that :func:`image_digest`), else InputError saying
    why."""
    path = Path(path)
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(f"no embedding file at {path}") from None
    except Exception as e:  # noqa: BLE001  (pickle, zip and weights-only refusals)
        raise InputError(f"{path} is not a readable embedding file: {type(e).__name__}: "
                         f"{str(e).splitlines()[0][:200] if str(e) else ''}") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise InputError(f"{path} is not a fastpipes SAM embedding file (format {FORMAT})")
    mine = encoder_fingerprint(sam)
    if blob.get("encoder") != mine:
        raise InputError(f"{path} was made by another image encoder (fingerprint "
                         f"{blob.get('encoder')}; this model's is {mine}): encode the image "
                         "again with set_image")
    if image is not None and blob.get("image") != image:
        raise InputError(f"{path} was made from another picture (or the image file changed "
                         "since)" if blob.get("image") else f"{path} does not say which "
                         "picture it was made from (saved without an image digest)")
    size = blob.get("original_size")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) for v in size)):
        raise InputError(f"{path} has no valid original_size")
    return blob["features"], (size[0], size[1])


def set_image_reusing(predictor: Any, image: np.ndarray, load_from: Path | None,
                      save_to: Path | None) -> dict:
    """Set `image` on the SamPredictor `predictor` from the embedding file `load_from` when
    that file was saved from this picture by this encoder, else by encoding it (the masks are
    the same either way: a file only saves the encoder call); then keep the embedding in
    `save_to`. Returns what happened, for the job's record:
    ``{"source": "file" | "encoder", "file", "why" (the file was not used), "saved"}``."""
    info: dict = {"source": "encoder"}
    if load_from is not None:
        info["file"] = str(load_from)
        try:  # missing, unreadable, another encoder or another picture: InputError
            predictor.load_embedding(load_from, image=image)
            info["source"] = "file"
        except InputError as e:
            info["why"] = str(e)
    if info["source"] == "encoder":
        predictor.set_image(image)
    if save_to is not None and (info["source"] == "encoder" or save_to != load_from):
        predictor.save_embedding(save_to, image=image)
        info["saved"] = str(save_to)
    return info
