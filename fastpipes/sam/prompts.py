"""The prompts of ``fastpipes run sam``: the --points / --boxes flags, a --prompts file,
and one prompt as the predictor's arrays; every number checked against fastpipes.bounds.

>>> parse_boxes("5,5,80,55")
((5.0, 5.0, 80.0, 55.0),)
"""
from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np

from fastpipes.bounds import check_float, check_int, read_capped
from fastpipes.errors import InputError

def parse_points(text: str) -> tuple[tuple[float, float, int], ...]:
    """``"x,y[,label];x,y[,label]"`` -> ((x, y, label), ...); label 1 (default) or 0.

    >>> parse_points("10,20;30,40,0")
    ((10.0, 20.0, 1), (30.0, 40.0, 0))
    """
    out = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        vals = part.split(",")
        try:
            if len(vals) not in (2, 3):
                raise ValueError
            label = int(vals[2]) if len(vals) == 3 else 1
            if label not in (0, 1):
                raise ValueError
            x, y = float(vals[0]), float(vals[1])
        except ValueError:
            raise InputError(f"--points: bad point {part!r}; expected x,y or x,y,label with "
                             "label 1 (foreground) or 0 (background), points separated by ';'"
                             ) from None
        out.append((_coord(x, f"--points: point {part!r}: x"),
                    _coord(y, f"--points: point {part!r}: y"), label))
    if not out:
        raise InputError("--points: no points given (expected e.g. 320,240 or 10,20;30,40,0)")
    check_int("points_per_prompt", len(out), "--points: the number of points")
    return tuple(out)


def parse_boxes(text: str) -> tuple[tuple[float, float, float, float], ...]:
    """``"x0,y0,x1,y1[;...]"`` -> ((x0, y0, x1, y1), ...): one prompt per box."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        try:
            vals = tuple(float(v) for v in part.split(","))
        except ValueError:
            vals = ()
        if len(vals) != 4:
            raise InputError(f"--boxes: bad box {part!r}; expected x0,y0,x1,y1 (pixels, XYXY), "
                             "boxes separated by ';'")
        out.append(tuple(_coord(v, f"--boxes: box {part!r}: {n}")
                         for v, n in zip(vals, ("x0", "y0", "x1", "y1"))))
    if not out:
        raise InputError("--boxes: no boxes given (expected e.g. 10,20,200,180)")
    check_int("prompts_per_image", len(out), "--boxes: the number of boxes")
    return tuple(out)


def _coord(value: float, label: str) -> float:
    return check_float("point_coordinate", value, label)


def check_image_shape(h: int, w: int) -> None:
    """InputError for an image SAM cannot be given: a side out of bounds, or so long and
    thin that resizing its long side to the encoder's would leave no short side."""
    check_int("image_side", h, f"image height (the image is {w}x{h})")
    check_int("image_side", w, f"image width (the image is {w}x{h})")
    check_float("image_aspect", max(h, w) / min(h, w), f"image aspect ratio ({w}x{h})")


def prompt_arrays(prompt: Any) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """A prompt ({"points": [[x, y], ...], "labels": [...], "box": [x0, y0, x1, y1]}) as
    the predictor's arrays; InputError names what is wrong."""
    if not isinstance(prompt, dict) or not ({"points", "box"} & prompt.keys()):
        raise InputError(f"a prompt must be an object with 'points' and/or 'box', got {prompt!r}")
    unknown = set(prompt) - {"points", "labels", "box"}
    if unknown:
        raise InputError(f"unknown prompt keys {sorted(unknown)}; allowed: points, labels, box")
    coords = labels = box = None
    try:
        if prompt.get("points") is not None:
            coords = np.asarray(prompt["points"], dtype=np.float64).reshape(-1, 2)
            labels = np.asarray(prompt.get("labels") or [1] * len(coords), dtype=np.int64)
        if prompt.get("box") is not None:
            box = np.asarray(prompt["box"], dtype=np.float64).reshape(4)
    except (ValueError, TypeError) as e:
        raise InputError(f"bad prompt {prompt!r}: points must be [[x, y], ...], labels "
                         f"[1 or 0, ...], box [x0, y0, x1, y1] ({e})") from None
    if coords is not None:
        check_int("points_per_prompt", len(coords), "the number of points in a prompt")
        if len(labels) != len(coords) or not np.isin(labels, (0, 1)).all():
            raise InputError(f"bad prompt {prompt!r}: labels must be one 1 (foreground) or "
                             "0 (background) per point")
    for name, arr in (("points", coords), ("box", box)):
        for v in (arr.ravel() if arr is not None else ()):
            _coord(float(v), f"prompt {name}")
    return coords, labels, box


def prompts_from_flags(points: Sequence, boxes: Sequence) -> list[dict]:
    pts = {"points": [[x, y] for x, y, _ in points], "labels": [lab for _, _, lab in points]} \
        if points else {}
    if boxes:
        return [{**pts, "box": list(b)} for b in boxes]
    return [pts]


def read_prompt_file(path: str) -> dict:
    try:
        data = json.loads(read_capped(path, "--prompts"))
    except ValueError as e:
        raise InputError(f"--prompts {path}: not valid JSON: {e}") from None
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise InputError(f"--prompts {path}: expected an object mapping image names (or '*' "
                         "for every image) to lists of prompts, e.g. "
                         '{"cat.jpg": [{"points": [[320, 240]]}, {"box": [10, 20, 200, 180]}]}')
    return data
