"""Small blocky RGB pictures for the `fastpipes run sam` tests (imported by them; pytest puts
tests/ on sys.path)."""
from pathlib import Path

import numpy as np
from PIL import Image


def make_images(folder: Path, n: int = 3) -> Path:
    """`n` 60 x 90 pictures img0.png ... in `folder` (created), the same in every run."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        img = np.kron(rng.integers(0, 256, (6, 9, 3), dtype=np.uint8),
                      np.ones((10, 10, 1), np.uint8))  # 60 x 90, blocky
        Image.fromarray(img).save(folder / f"img{i}.png")
    return folder
