"""`fastpipes run sam`'s extra files (issue 27, item 7): embeddings kept with --save-embeddings
and reused with --embeddings (no encoder call, the same masks; a missing, stale or foreign
file is encoded again and said so), and --overlays (the image, tinted only where a mask is)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fastpipes.cli.main import main

Image = pytest.importorskip("PIL.Image")
from sam_images import make_images  # noqa: E402  (after the PIL check)
pytest.importorskip("pycocotools.mask")

TINY = ["--model", "tiny", "--random-weights", "--recipe", "none", "--quiet"]


@pytest.fixture
def encoder_calls(monkeypatch):
    """Every image-encoder forward of any SAM the job builds, counted."""
    from fastpipes.sam import pipeline

    calls = []
    real = pipeline.build_sam

    def counted(*args, **kwargs):
        sam = real(*args, **kwargs)
        sam.image_encoder.register_forward_hook(lambda *a: calls.append(1))
        return sam

    monkeypatch.setattr(pipeline, "build_sam", counted)
    monkeypatch.setattr("fastpipes.sam.build_sam", counted)
    return calls


def masks_of(out: Path) -> list[list[dict]]:
    return [[{k: m[k] for k in ("segmentation", "score", "area", "bbox")} for m in r["masks"]]
            for r in json.loads((out / "masks.json").read_text())["images"]]


def records(out: Path) -> list[dict]:
    return json.loads((out / "masks.json").read_text())["images"]


def test_saved_embeddings_are_reused_without_the_encoder(tmp_path, encoder_calls):
    images, emb = make_images(tmp_path / "pics", n=2), tmp_path / "emb"
    args = ["run", "sam", "--images", str(images), "--points", "45,30;10,10,0", *TINY]
    assert main([*args, "--out", str(tmp_path / "a"), "--save-embeddings", str(emb)]) == 0
    assert sorted(p.name for p in emb.iterdir()) == ["img0.sam.pt", "img1.sam.pt"]
    first = len(encoder_calls)
    assert first == 3  # warm-up + two images

    assert main([*args, "--out", str(tmp_path / "b"), "--embeddings", str(emb)]) == 0
    assert len(encoder_calls) == first + 1  # the warm-up only: no image was encoded
    assert masks_of(tmp_path / "b") == masks_of(tmp_path / "a")
    png_a = sorted((tmp_path / "a" / "masks").rglob("*.png"))
    for p in png_a:
        q = tmp_path / "b" / p.relative_to(tmp_path / "a")
        assert np.array_equal(np.asarray(Image.open(p)), np.asarray(Image.open(q)))
    assert [r["embedding"]["source"] for r in records(tmp_path / "b")] == ["file", "file"]


def test_a_missing_or_stale_embedding_is_encoded_and_the_record_says_why(tmp_path,
                                                                          encoder_calls):
    images, emb = make_images(tmp_path / "pics", n=2), tmp_path / "emb"
    args = ["run", "sam", "--images", str(images), "--points", "45,30", *TINY]
    assert main([*args, "--out", str(tmp_path / "a"), "--save-embeddings", str(emb)]) == 0
    (emb / "img0.sam.pt").unlink()  # missing
    pixels = np.asarray(Image.open(images / "img1.png")).copy()
    pixels[0, 0] ^= 255
    Image.fromarray(pixels).save(images / "img1.png")  # the picture changed since
    before = len(encoder_calls)

    assert main([*args, "--out", str(tmp_path / "b"), "--embeddings", str(emb)]) == 0
    assert len(encoder_calls) == before + 3  # warm-up + both images encoded again
    why = [r["embedding"] for r in records(tmp_path / "b")]
    assert [w["source"] for w in why] == ["encoder", "encoder"]
    assert "no embedding file" in why[0]["why"] and "another picture" in why[1]["why"]

    # another encoder (seed 1: other random weights) is refused the same way
    assert main([*args, "--out", str(tmp_path / "c"), "--embeddings", str(emb),
                 "--seed", "1"]) == 0
    assert "another image encoder" in records(tmp_path / "c")[1]["embedding"]["why"]


def test_everything_reuses_the_whole_image_embedding(tmp_path, encoder_calls):
    images, emb = make_images(tmp_path / "pics", n=1), tmp_path / "emb"
    args = ["run", "sam", "--images", str(images), "--everything", "--points-per-side", "4",
            "--pred-iou-thresh", "0", "--stability-thresh", "0", *TINY]
    assert main([*args, "--out", str(tmp_path / "a"), "--save-embeddings", str(emb)]) == 0
    before = len(encoder_calls)
    assert main([*args, "--out", str(tmp_path / "b"), "--embeddings", str(emb)]) == 0
    assert len(encoder_calls) == before + 1  # the warm-up only
    assert masks_of(tmp_path / "b") == masks_of(tmp_path / "a")


def test_embeddings_dir_that_does_not_exist_is_refused_first(tmp_path, capsys):
    images = make_images(tmp_path / "pics", n=1)
    assert main(["run", "sam", "--images", str(images), "--points", "45,30", *TINY,
                 "--out", str(tmp_path / "o"), "--embeddings", str(tmp_path / "nope")]) == 1
    assert "--embeddings" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_overlay_tints_exactly_the_masks(tmp_path):
    from fastpipes.sam.image_io import decode_rle

    images = make_images(tmp_path / "pics", n=1)
    out = tmp_path / "out"
    assert main(["run", "sam", "--images", str(images), "--prompts", str(_two_prompts(tmp_path)),
                 "--overlays", "--out", str(out), *TINY]) == 0
    (rec,) = records(out)
    assert rec["overlay"] == "overlays/img0.png"
    picture = np.asarray(Image.open(images / "img0.png").convert("RGB"))
    shown = np.asarray(Image.open(out / rec["overlay"]))
    assert shown.shape == picture.shape  # RGB, the image's size
    union = np.zeros(picture.shape[:2], bool)
    for m in rec["masks"]:
        union |= decode_rle(m["segmentation"])
    assert union.any() and not union.all(), "the test needs masks that cover some pixels"
    changed = (shown != picture).any(axis=-1)
    assert np.array_equal(changed, union)  # tinted inside every mask, untouched outside


def test_no_overlay_unless_asked(tmp_path):
    images = make_images(tmp_path / "pics", n=1)
    out = tmp_path / "out"
    assert main(["run", "sam", "--images", str(images), "--points", "45,30", "--out", str(out),
                 *TINY]) == 0
    assert not (out / "overlays").exists() and "overlay" not in records(out)[0]


def _two_prompts(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps({"*": [{"points": [[45, 30]]}, {"box": [5, 5, 40, 30]}]}))
    return path


def test_overlay_colours_and_outline():
    from fastpipes.sam.overlay import PALETTE, border, overlay

    image = np.full((8, 8, 3), 200, np.uint8)
    a = np.zeros((8, 8), bool)
    a[2:6, 2:6] = True
    out = overlay(image, [a])
    edge = border(a)
    assert edge.sum() == 12 and not edge[3:5, 3:5].any()  # the ring of a 4x4 square
    assert (out[edge] == PALETTE[0].astype(np.uint8)).all()  # outlined in the mask's colour
    inside = a & ~edge
    want = np.round(200 * 0.5 + PALETTE[0] * 0.5).astype(np.uint8)
    assert (out[inside] == want).all() and (out[~a] == 200).all()
    assert torch.equal(torch.from_numpy(overlay(image, [])), torch.from_numpy(image))
