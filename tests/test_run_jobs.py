"""The plumbing of a run: atomic writes, resume records, input naming, the summary."""
import os

import pytest

from fastpipes.run.outdir import OutDir, atomic_write
from fastpipes.sam.image_io import image_keys, list_images


def test_a_write_killed_before_the_rename_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "masks.json"
    target.write_text("old, complete")

    def killed(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, b"new" * 1000)
    assert target.read_text() == "old, complete"
    assert [p.name for p in tmp_path.iterdir()] == ["masks.json"]


def test_records_are_the_commit_point_and_follow_the_fingerprint(tmp_path):
    out = OutDir(tmp_path)
    out.commit("a", "fp1", {"masks/a/0.png": b"png"}, {"score": 1})
    assert out.done_fingerprint("a") == "fp1" and (tmp_path / "masks/a/0.png").read_bytes() == b"png"
    assert list(out.records([("a", "fp1"), ("b", "fp1")])) == [{"score": 1}]
    assert list(out.records([("a", "other settings")])) == []
    out.fail("a", "fp2", {"type": "InputError", "message": "bad"})  # redone with new settings
    assert out.done_fingerprint("a") is None
    assert out.errors(["a"])[0]["message"] == "bad"
    out.commit("a", "fp2", {}, {"score": 2})  # fixed: the error goes away
    assert out.errors(["a"]) == [] and out.done_fingerprint("a") == "fp2"


def test_image_keys_are_safe_and_unique():
    names = ["cat.jpg", "cat.png", "sub/dog.png", "a b.png", "a_b.png", "a_b_png-1.jpg"]
    keys = image_keys(names)
    assert keys[:3] == ["cat_jpg", "cat_png", "sub__dog"]
    assert keys[5] == "a_b_png-1"  # its own name; the numbered duplicates step around it
    assert len(set(keys)) == len(keys) and all("/" not in k and " " not in k for k in keys)


def test_list_images_skips_the_output_directory_inside_the_input(tmp_path):
    (tmp_path / "sub").mkdir()
    for rel in ("x.png", "sub/y.JPG", "notes.txt", "out/masks/x/0.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    found = [name for _, name in list_images(str(tmp_path), exclude=tmp_path / "out")]
    assert found == ["sub/y.JPG", "x.png"]
    globbed = [name for _, name in list_images(str(tmp_path / "**" / "*.png"),
                                               exclude=tmp_path / "out")]
    assert globbed == ["x.png"]


def test_summary_gives_the_speedup_auto_measured_and_no_guess_otherwise():
    from fastpipes.run.base import measured_speedup
    from fastpipes.run.jobs import RunSummary

    auto = {"recipe": "auto -> sam_bf16", "extra": {"auto": {
        "winner": "sam_bf16", "cached": True,
        "trials": [{"recipe": "sam_fp32_fast", "speedup": 1.8},
                   {"recipe": "sam_bf16", "speedup": 4.7}]}}}
    speedup, source = measured_speedup(auto)
    assert speedup == 4.7 and "auto" in source and "cached" in source
    assert measured_speedup({"recipe": "sam_bf16", "extra": {}})[0] is None
    text = str(RunSummary("sam", "out", "local", 3, done=2, failed=1, recipe="auto -> sam_bf16",
                          speedup=speedup, speedup_source=source, items_per_s=0.5,
                          start=[{"total_s": 9.0, "build_s": 1.0, "accelerate_s": 0.5,
                                  "warm_up_s": 7.5, "wait_s": 0.0}]))
    assert "4.70x over FP32 eager" in text and "2 done, 0 skipped (already done), 1 failed" in text
    assert "warm-up 7.5" in text and "start lock" not in text
