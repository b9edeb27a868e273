"""fastpipes.files: the one atomic write."""
from __future__ import annotations

import os
import stat

import pytest

from fastpipes.files import atomic_file, atomic_write, atomic_write_lines, temporary_name


def test_atomic_write_replaces_whole_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "a.json"  # a missing parent is made
    atomic_write(target, "old")
    atomic_write(target, b"new" * 1000)
    assert target.read_bytes() == b"new" * 1000
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "a.txt"
    atomic_write(target, "old")

    def broken(tmp):
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError, match="killed"):
        atomic_file(target, broken)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_mode_makes_the_file_private_whatever_the_writer(tmp_path):
    old = os.umask(0o022)
    try:
        private = atomic_file(tmp_path / "b.bin", lambda tmp: tmp.write_bytes(b"x"), mode=0o600)
        shared = atomic_write(tmp_path / "c.bin", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(shared.stat().st_mode) == 0o644


def test_a_stale_temporary_of_our_pid_does_not_block_a_private_write(tmp_path):
    target = tmp_path / "b.bin"
    temporary_name(target).write_bytes(b"left by a killed writer")
    atomic_write(target, b"new", mode=0o600)
    assert target.read_bytes() == b"new" and not temporary_name(target).exists()


def test_suffix_is_kept_for_writers_that_read_the_format_from_the_name(tmp_path):
    seen = []
    atomic_file(tmp_path / "chart.png", lambda tmp: seen.append(tmp) or tmp.write_bytes(b""),
                suffix=".png")
    assert seen[0].suffix == ".png" and seen[0].parent == tmp_path


def test_lines_are_streamed_with_newlines(tmp_path):
    path = atomic_write_lines(tmp_path / "x.jsonl", (str(i) for i in range(3)))
    assert path.read_text() == "0\n1\n2\n"
