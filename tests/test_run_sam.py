"""`fastpipes run sam` end to end on a tiny random-weight SAM: prompts, everything, resume,
bad inputs, and the COCO RLE in masks.json."""
import json

import numpy as np
import pytest

from fastpipes.cli.main import main
from fastpipes.errors import InputError

Image = pytest.importorskip("PIL.Image")
from sam_images import make_images  # noqa: E402  (after the PIL check)
mask_utils = pytest.importorskip("pycocotools.mask")

# no compile in the fast suite: the recipe's other passes (SDPA attention) still apply
TINY = ["--model", "tiny", "--random-weights", "--recipe", "sam_fp32_fast",
        "--set", "compile.enabled=false", "--quiet"]


def test_points_corrupt_image_is_recorded_and_rle_decodes_back(tmp_path, capsys):
    images = make_images(tmp_path / "pics")
    (images / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    out = tmp_path / "out"
    code = main(["run", "sam", "--images", str(images), "--points", "45,30;10,10,0",
                 "--boxes", "5,5,80,55", "--out", str(out), *TINY])
    assert code == 1  # one input failed, the others were done
    text = capsys.readouterr().out
    assert "3 done, 0 skipped (already done), 1 failed" in text and "recipe   sam_fp32_fast" in text

    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert [(e["input"], e["type"]) for e in errors] == [("broken.jpg", "InputError")]
    assert "cannot read image" in errors[0]["message"]

    result = json.loads((out / "masks.json").read_text())
    assert [r["image"] for r in result["images"]] == ["img0.png", "img1.png", "img2.png"]
    for rec in result["images"]:
        assert (rec["height"], rec["width"]) == (60, 90)
        (m,) = rec["masks"]  # points + one box: one prompt, one mask
        rle = {"size": m["segmentation"]["size"], "counts": m["segmentation"]["counts"].encode()}
        decoded = mask_utils.decode(rle).astype(bool)
        png = np.asarray(Image.open(out / m["file"])) > 127
        assert decoded.shape == (60, 90) and (decoded == png).all()
        assert m["area"] == int(decoded.sum()) == int(mask_utils.area(rle))
        assert 0.0 <= m["score"] <= 1.5
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["done"], summary["failed"], summary["engine"]) == (3, 1, "local")


def test_rle_round_trip_is_exact():
    from fastpipes.sam.image_io import decode_rle, encode_rle

    rng = np.random.default_rng(1)
    for shape in ((1, 1), (7, 13), (64, 48)):
        mask = rng.random(shape) > 0.5
        rle = encode_rle(mask)
        assert isinstance(rle["counts"], str) and rle["size"] == list(shape)
        assert (decode_rle(json.loads(json.dumps(rle))) == mask).all()


def test_interrupted_run_resumes_where_it_stopped(tmp_path, monkeypatch, capsys):
    from fastpipes.run import run_sam
    from fastpipes.sam.run import SamJob

    images = make_images(tmp_path / "pics", n=3)
    out = tmp_path / "out"
    real = SamJob.process
    calls = []

    def ctrl_c_on_second(self, pipe, item):
        calls.append(item.key)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, pipe, item)

    monkeypatch.setattr(SamJob, "process", ctrl_c_on_second)
    summary = run_sam(images, out, points="45,30", model="tiny", random_weights=True,
                      recipe="sam_fp32_fast", overrides=["compile.enabled=false"],
                      progress=False)
    assert summary.interrupted and summary.exit_code == 130 and summary.done == 1
    done = json.loads((out / "masks.json").read_text())["images"]
    assert [r["image"] for r in done] == ["img0.png"]  # what finished is kept and listed
    assert not list(out.rglob("*.tmp")) and not (out / "masks" / "img1").exists()

    monkeypatch.setattr(SamJob, "process", real)
    # the same images named another way (a glob) are the same inputs
    assert main(["run", "sam", "--images", str(images / "*.png"), "--points", "45,30",
                 "--out", str(out), *TINY]) == 0
    assert "2 done, 1 skipped (already done), 0 failed" in capsys.readouterr().out
    assert len(json.loads((out / "masks.json").read_text())["images"]) == 3
    # other prompts are another job: nothing is skipped
    assert main(["run", "sam", "--images", str(images), "--points", "20,20", "--out", str(out),
                 *TINY]) == 0
    assert "3 done, 0 skipped" in capsys.readouterr().out


def test_everything_mode_writes_deduplicated_masks(tmp_path, capsys, monkeypatch):
    import torch

    from fastpipes.sam.nms import nms

    said = []  # what the job's heartbeat would add to its line (issue 27: minutes per image)
    monkeypatch.setattr("fastpipes.sam.amg.detail", said.append)
    images = make_images(tmp_path / "pics", n=1)
    out = tmp_path / "out"
    assert main(["run", "sam", "--images", str(images / "*.png"), "--everything",
                 "--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-thresh", "0",
                 "--out", str(out), "--model", "tiny", "--random-weights", "--recipe", "none",
                 "--quiet"]) == 0
    assert "recipe   none (FP32 eager)" in capsys.readouterr().out
    assert said == ["automatic masks, crop 1/1: encoding the image",
                    "automatic masks, crop 1/1: 0/1 prompt batches done"]  # 16 points, 16 a batch
    (rec,) = json.loads((out / "masks.json").read_text())["images"]
    masks = rec["masks"]
    assert masks, "random weights with the thresholds at 0 still give masks"
    boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (m["bbox"] for m in masks)])
    scores = torch.tensor([m["predicted_iou"] for m in masks])
    assert len(nms(boxes, scores, 0.7)) == len(masks)  # no duplicates left
    for m in masks:
        decoded = mask_utils.decode({"size": m["segmentation"]["size"],
                                     "counts": m["segmentation"]["counts"].encode()})
        assert decoded.shape == (60, 90) and int(decoded.sum()) == m["area"]
        assert (np.asarray(Image.open(out / m["file"])) > 127).sum() == m["area"]


def test_prompt_file_per_image_and_a_missing_entry(tmp_path):
    images = make_images(tmp_path / "pics", n=2)
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"img0.png": [{"points": [[45, 30]], "labels": [1]},
                                                {"box": [5, 5, 60, 50]}]}))
    out = tmp_path / "out"
    assert main(["run", "sam", "--images", str(images), "--prompts", str(prompts),
                 "--all-masks", "--out", str(out), *TINY]) == 1
    (rec,) = json.loads((out / "masks.json").read_text())["images"]
    # --all-masks: three candidates for every prompt
    assert [(m["prompt"], m["candidate"]) for m in rec["masks"]] == \
        [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    (err,) = [json.loads(x) for x in (out / "errors.jsonl").read_text().splitlines()]
    assert err["input"] == "img1.png" and "no prompts for 'img1.png'" in err["message"]


def test_bad_arguments_are_reported_before_anything_is_built(tmp_path, capsys):
    from fastpipes.run import run_sam
    from fastpipes.sam.run import parse_points

    images = make_images(tmp_path / "pics", n=1)
    with pytest.raises(InputError, match="label 1 .* or 0"):
        parse_points("1,2,5")
    with pytest.raises(InputError, match="exactly one kind of prompt"):
        run_sam(images, tmp_path / "o", points="1,1", everything=True, random_weights=True,
                model="tiny", progress=False)
    with pytest.raises(InputError, match="--checkpoint FILE .* --random-weights"):
        run_sam(images, tmp_path / "o", points="1,1", model="vit_b", progress=False)
    with pytest.raises(InputError, match="recipe 'sdxl_bf16' is for sdxl"):
        run_sam(images, tmp_path / "o", points="1,1", model="tiny", random_weights=True,
                recipe="sdxl_bf16", progress=False)
    # the Python API's tuples and settings get the CLI's checks, before any model is built
    with pytest.raises(InputError, match="bad point '1'"):
        run_sam(images, tmp_path / "o", points=[(1,)], model="tiny", random_weights=True,
                progress=False)
    with pytest.raises(InputError, match="bad box"):
        run_sam(images, tmp_path / "o", boxes=[(1, 2, 3)], model="tiny", random_weights=True,
                progress=False)
    with pytest.raises(InputError, match=r"amg: unknown settings \['bad'\]; allowed: .*points_per_side"):
        run_sam(images, tmp_path / "o", everything=True, amg={"bad": 1}, model="tiny",
                random_weights=True, progress=False)
    with pytest.raises(InputError, match="cpus_per_actor must be a finite number above 0"):
        run_sam(images, tmp_path / "o", points="1,1", model="tiny", random_weights=True,
                engine="ray", cpus_per_actor=0, progress=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="cannot create it"):
        run_sam(images, tmp_path / "file" / "o", points="1,1", model="tiny",
                random_weights=True, progress=False)
    assert main(["run", "sam", "--images", str(tmp_path / "nothing"), "--points", "1,1",
                 "--out", str(tmp_path / "o"), *TINY]) == 1
    assert "no such directory or file" in capsys.readouterr().err
