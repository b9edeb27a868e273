"""A picture to look at: the image with its masks tinted and outlined, one colour per mask.

Only numpy here (and Pillow to write the PNG): no matplotlib. Every pixel that changes lies
inside a mask: the tint is a blend with the mask's colour, the outline is the mask's own
border pixels painted in that colour, so a pixel outside every mask is left exactly as it was.

>>> image = np.zeros((4, 6, 3), np.uint8); mask = np.zeros((4, 6), bool); mask[1:3, 1:4] = True
>>> out = overlay(image, [mask])
>>> bool((out[~mask] == image[~mask]).all()), bool((out[mask] != image[mask]).any(axis=-1).all())
(True, True)
"""
from __future__ import annotations

import io
from typing import Iterable

import numpy as np

# matplotlib's tab10, so overlays look like the upstream notebooks' (without importing it)
PALETTE = np.array([(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40),
                    (148, 103, 189), (140, 86, 75), (227, 119, 194), (127, 127, 127),
                    (188, 189, 34), (23, 190, 207)], np.float32)
ALPHA = 0.5  # how much of the colour a tinted pixel takes


def border(mask: np.ndarray) -> np.ndarray:
    """The mask's pixels with a 4-neighbour outside it (or on the image's edge): [H, W] bool."""
    inner = np.zeros_like(mask)
    inner[1:-1, 1:-1] = (mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1]
                         & mask[1:-1, :-2] & mask[1:-1, 2:])
    return mask & ~inner


def overlay(image: np.ndarray, masks: Iterable[np.ndarray], alpha: float = ALPHA) -> np.ndarray:
    """`image` (H x W x 3 uint8) with each [H, W] bool mask tinted and outlined in its own
    colour (mask i: ``PALETTE[i % 10]``); outlines are drawn over every tint."""
    out = image.astype(np.float32)
    outlines = []
    for i, mask in enumerate(masks):
        colour = PALETTE[i % len(PALETTE)]
        out[mask] = out[mask] * (1 - alpha) + colour * alpha
        outlines.append((np.nonzero(border(mask)), colour))  # indices: masks may be many
    for edge, colour in outlines:
        out[edge] = colour
    return out.round().clip(0, 255).astype(np.uint8)


def overlay_png(image: np.ndarray, masks: Iterable[np.ndarray]) -> bytes:
    """:func:`overlay` as PNG bytes (RGB, the image's size)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(overlay(image, masks)).save(buf, format="PNG")
    return buf.getvalue()
