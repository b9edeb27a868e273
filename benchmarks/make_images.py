"""A folder of made-up pictures for `fastpipes run sam` benchmarks (nothing downloaded).

    python benchmarks/make_images.py bench-out/images --count 24            # SAM vit_b runs
    python benchmarks/make_images.py /tmp/imgs --count 4 --scale 0.1        # a smoke test

Three kinds, in turn: flat shapes on a plain background, overlapping gradients, and rendered
"photos" (sky, sun, hills, trees, a lake with a reflection, sensor noise), at several sizes
and aspect ratios (640x480 to 1600x1200 at --scale 1), so resizing and padding are
exercised. Deterministic: the same --seed gives the same files.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZES = [(1024, 768), (1280, 720), (800, 600), (1600, 1200), (640, 480), (1024, 1024),
         (720, 1280), (1200, 900)]


def _color(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def shapes(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    im = Image.new("RGB", (w, h), _color(rng))
    d = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(4, 12))):
        x0, y0 = rng.integers(0, w - 20), rng.integers(0, h - 20)
        x1 = min(w, x0 + int(rng.integers(8, max(9, w // 3))))
        y1 = min(h, y0 + int(rng.integers(8, max(9, h // 3))))
        kind = rng.integers(0, 3)
        if kind == 0:
            d.rectangle([x0, y0, x1, y1], fill=_color(rng))
        elif kind == 1:
            d.ellipse([x0, y0, x1, y1], fill=_color(rng))
        else:
            d.polygon([(x0, y1), ((x0 + x1) // 2, y0), (x1, y1)], fill=_color(rng))
    return im


def gradients(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.zeros((h, w, 3), np.float32)
    for _ in range(3):
        angle = rng.uniform(0, np.pi)
        ramp = (np.cos(angle) * xx / w + np.sin(angle) * yy / h) % 1.0
        img += ramp[..., None] * rng.uniform(0, 255, 3) / 3
    cx, cy, r = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h, rng.uniform(0.1, 0.3) * w
    disc = ((xx - cx) ** 2 + (yy - cy) ** 2) < r * r
    img[disc] = img[disc] * 0.3 + np.array(_color(rng)) * 0.7
    return Image.fromarray(img.clip(0, 255).astype(np.uint8))


def photo(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    yy = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    top, bottom = np.array([40, 90, 200]), np.array([200, 220, 255])
    sky = (top * (1 - yy) + bottom * yy) * np.ones((1, w, 1))
    im = Image.fromarray(sky.astype(np.uint8))
    d = ImageDraw.Draw(im)
    sx, sy, sr = rng.uniform(0.1, 0.9) * w, rng.uniform(0.05, 0.3) * h, 0.05 * w
    d.ellipse([sx - sr, sy - sr, sx + sr, sy + sr], fill=(255, 230, 120))
    horizon = int(h * rng.uniform(0.45, 0.65))
    for layer in range(3):  # far to near hills, darker green
        pts = [(0, h)]
        for x in np.linspace(0, w, 12):
            pts.append((float(x), horizon - layer * 0.05 * h + rng.uniform(-0.12, 0.05) * h
                        + layer * 0.08 * h))
        pts.append((w, h))
        g = 140 - 35 * layer
        d.polygon(pts, fill=(30 + 10 * layer, g, 40))
    lake_top = int(h * 0.8)
    d.rectangle([0, lake_top, w, h], fill=(50, 90, 150))
    for _ in range(int(rng.integers(3, 8))):  # trees
        tx, ty = rng.uniform(0, w), rng.uniform(horizon, lake_top)
        th = rng.uniform(0.05, 0.15) * h
        d.rectangle([tx - th * 0.05, ty - th * 0.3, tx + th * 0.05, ty], fill=(90, 60, 30))
        d.polygon([(tx - th * 0.3, ty - th * 0.3), (tx, ty - th), (tx + th * 0.3, ty - th * 0.3)],
                  fill=(20, 90, 30))
    arr = np.asarray(im.filter(ImageFilter.GaussianBlur(1.5))).astype(np.float32)
    mirror = arr[2 * lake_top - h:lake_top][::-1] if 2 * lake_top - h >= 0 else None
    if mirror is not None and len(mirror) == h - lake_top:  # a dim reflection in the lake
        arr[lake_top:] = arr[lake_top:] * 0.6 + mirror * 0.4
    arr += rng.normal(0, 4, arr.shape)  # sensor noise
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder")
    ap.add_argument("--count", type=int, default=24)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every size (0.1: tiny)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = Path(args.folder)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    kinds = [shapes, gradients, photo]
    for i in range(args.count):
        w, h = SIZES[i % len(SIZES)]
        w, h = max(32, int(w * args.scale)), max(32, int(h * args.scale))
        im = kinds[i % 3](rng, w, h)
        name = out / f"{i:03d}_{kinds[i % 3].__name__}.{'jpg' if i % 2 else 'png'}"
        im.save(name, quality=92) if name.suffix == ".jpg" else im.save(name)
    print(f"wrote {args.count} images to {out}")


if __name__ == "__main__":
    main()
