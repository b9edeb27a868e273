"""Files of the SAM job: finding images, reading them, and writing masks (PNG, COCO RLE).

RLE is pycocotools' (the COCO format every segmentation tool reads), never hand-rolled:

>>> m = np.zeros((4, 5), bool); m[1:3, 2:4] = True
>>> bool((decode_rle(encode_rle(m)) == m).all())
True
"""
from __future__ import annotations

import glob
import io
import os
import re
from collections import Counter
from pathlib import Path

import numpy as np

from fastpipes.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def list_images(spec: str, exclude: Path | None = None) -> list[tuple[Path, str]]:
    """(path, name) of every PNG/JPEG in a directory (recursively), a glob, or one file;
    names are relative to the directory (or the glob's fixed prefix). Files under
    `exclude` (the job's --out) and hidden directories are left out."""
    root = Path(os.path.expanduser(spec))
    if root.is_dir():
        files = [p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES]
    elif glob.has_magic(spec):
        files = [Path(p) for p in glob.glob(os.path.expanduser(spec), recursive=True)]
        parts = Path(os.path.expanduser(spec)).parts
        fixed = next(i for i, part in enumerate(parts) if glob.has_magic(part))
        root = Path(*parts[:fixed]) if fixed else Path(".")
    elif root.is_file():
        files, root = [root], root.parent
    else:
        raise InputError(f"--images {spec}: no such directory or file, and no glob matches")
    skip = exclude.resolve() if exclude is not None else None
    out = []
    for p in sorted(files):
        rel = p.relative_to(root) if p.is_relative_to(root) else Path(p.name)
        if not p.is_file() or any(part.startswith(".") for part in rel.parts[:-1]):
            continue
        if skip is not None and (skip == p.resolve().parent or skip in p.resolve().parents):
            continue
        out.append((p, rel.as_posix()))
    if not out:
        raise InputError(f"--images {spec}: no images found (PNG or JPEG: "
                         f"{', '.join(IMAGE_SUFFIXES)})")
    return out


def image_keys(names: list[str]) -> list[str]:
    """File-name-safe, unique keys: 'a/cat.jpg' -> 'a__cat'; 'cat.jpg' + 'cat.png' ->
    'cat_jpg', 'cat_png'."""
    def clean(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9._-]", "_", text.replace("/", "__")).lstrip(".") or "_"

    stems = [clean(str(Path(n).with_suffix(""))) for n in names]
    n_stem = Counter(stems)
    keys = [s if n_stem[s] == 1 else clean(n.replace(".", "_")) for s, n in zip(stems, names)]
    n_key, taken = Counter(keys), set(keys)
    seen: dict[str, int] = {}
    for i, k in enumerate(keys):  # still equal (e.g. 'a b.png' vs 'a_b.png'): number them
        if n_key[k] > 1:
            while f"{k}-{seen.get(k, 0) + 1}" in taken:  # never onto another file's key
                seen[k] = seen.get(k, 0) + 1
            seen[k] = seen.get(k, 0) + 1
            keys[i] = f"{k}-{seen[k]}"
            taken.add(keys[i])
    return keys


def load_image(path: str) -> np.ndarray:
    """H x W x 3 uint8 RGB; InputError for a file Pillow cannot decode."""
    try:
        from PIL import Image
    except ImportError as e:
        raise InputError("reading images needs pillow: pip install 'fastpipes[sam]'") from e
    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))  # a writable copy: torch warns on read-only
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise InputError(f"cannot read image {path}: {type(e).__name__}: {e}") from None


def png_bytes(mask: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255).save(buf, format="PNG")
    return buf.getvalue()


def encode_rle(mask: np.ndarray) -> dict:
    """COCO RLE of a boolean H x W mask, counts as str (JSON-able), via pycocotools."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: dict) -> np.ndarray:
    """Boolean H x W mask of a COCO RLE as :func:`encode_rle` writes it."""
    from pycocotools import mask as mask_utils

    counts = rle["counts"].encode("ascii") if isinstance(rle["counts"], str) else rle["counts"]
    return mask_utils.decode({"size": list(rle["size"]), "counts": counts}).astype(bool)


def mask_entry(mask: np.ndarray, rle: dict) -> dict:
    """Area, XYWH bbox (pycocotools' toBbox) and the RLE of one mask, for masks.json."""
    from pycocotools import mask as mask_utils

    coco = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
    return {"area": int(mask.sum()), "bbox": [float(v) for v in mask_utils.toBbox(coco)],
            "segmentation": rle}
