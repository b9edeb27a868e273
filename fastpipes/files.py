"""Atomic file writes: the one way fastpipes puts a file where a reader may look.

A file is written to a temporary name in the same directory (``.<name>.<pid>.tmp``) and moved
into place with ``os.replace``, atomic on POSIX: a reader (a resumed run, a bench parent, a
process loading a cache) sees the old file or the whole new one, never half of one, and a
killed writer leaves at most its temporary file, removed on the way out when it can be.

>>> import tempfile, pathlib
>>> p = atomic_write(pathlib.Path(tempfile.mkdtemp()) / "out" / "a.json", '{"x": 1}')
>>> p.read_text()
'{"x": 1}'
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable


def temporary_name(path: Path, suffix: str = "") -> Path:
    """Where :func:`atomic_file` writes `path` first (`suffix` kept for writers, such as
    matplotlib, that pick a format from the name)."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp{suffix}")


def atomic_file(path: str | Path, write: Callable[[Path], object], *, mode: int | None = None,
                suffix: str = "") -> Path:
    """Call ``write(tmp)`` to fill a temporary file, then move it to `path` atomically.

    `mode`: the temporary file is created first with these permission bits, exclusively
    (e.g. 0o600 for a cache file that is yours alone); `write` then fills that file and the
    bits travel with it. Without it the file gets the usual umask bits. Missing parent
    directories are created (mode per umask: a cache makes its own with private_dir first).
    An exception from `write` leaves `path` as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path, suffix)
    try:
        if mode is not None:
            tmp.unlink(missing_ok=True)  # a leftover of a killed writer with our pid
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode))
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # interrupted between write and replace
    return path


def atomic_write(path: str | Path, data: bytes | str, *, mode: int | None = None) -> Path:
    """Write `data` (str: as UTF-8) to `path` atomically (:func:`atomic_file`)."""
    blob = data.encode("utf-8") if isinstance(data, str) else data
    return atomic_file(path, lambda tmp: tmp.write_bytes(blob), mode=mode)


def atomic_write_lines(path: str | Path, lines: Iterable[str]) -> Path:
    """Stream `lines` (each without its newline) into `path`, atomically."""
    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            for line in lines:
                f.write(line + "\n")

    return atomic_file(path, write)
