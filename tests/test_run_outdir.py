"""The output directory of a run: atomic writes, resume records, and input naming."""
import os

import pytest

from fastpipes.run.outdir import OutDir, atomic_write
from fastpipes.run.sam_io import image_keys, list_images


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
    names = ["cat.jpg", "cat.png", "sub/dog.png", "a b.png", "a_b.png"]
    keys = image_keys(names)
    assert keys[:3] == ["cat_jpg", "cat_png", "sub__dog"]
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
