"""The files a benchmark writes (--json, --markdown, --plot): checked before the first worker
starts, written at the end; a file that still cannot be written goes to a fallback path, so
a long run's results are never lost.

>>> problems = check_outputs({"json": "out/sam.json", "plot": "out/sam.xyz"})  # doctest: +SKIP
['--plot out/sam.xyz: unsupported chart format .xyz; allowed: .png, .svg, .pdf']
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Callable

from fastpipes.bench.render import markdown, plot
from fastpipes.bench.result import BenchResult
from fastpipes.files import atomic_file

PLOT_SUFFIXES = (".png", ".svg", ".pdf")
KINDS = {"json": ".json", "markdown": ".md", "plot": ".png"}  # kind -> fallback suffix


def _writable_dir(directory: Path, made: list[Path]) -> str:
    """Why files cannot be created in `directory`, or ''. Checked by doing it: the missing
    directories are created (appended to `made`) and a file is created and removed there,
    since permission bits say nothing for root, /proc, or a read-only mount."""
    missing = []
    existing = directory
    while not existing.exists() and not existing.is_symlink():
        missing.append(existing)
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a directory"
    for d in reversed(missing):
        try:
            d.mkdir()
        except OSError as e:
            return f"directory {d} cannot be created: {e.strerror or e}"
        made.append(d)
    try:
        fd, probe = tempfile.mkstemp(prefix=".fastpipes-probe-", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        return f"directory {directory} is not writable: {e.strerror or e}"
    return ""


def check_outputs(paths: dict[str, str | None]) -> list[str]:
    """Every problem with the output paths (kind -> path or None), before anything runs.

    A path given must name a file that can be written: not empty, not a directory, in a
    directory that can be created and written (tried here; directories made for a path
    that is refused are removed again, so a refused command leaves nothing behind)."""
    problems, seen, made = [], {}, []
    for kind, raw in paths.items():
        if raw is None:
            continue
        flag = f"--{kind}"
        if not raw.strip():
            problems.append(f"{flag} {raw!r}: an empty path; give a file name, or leave out "
                            f"{flag} to write no {kind} file")
            continue
        path = Path(raw).expanduser()
        if path.is_dir():
            problems.append(f"{flag} {raw}: is an existing directory; give a file name")
            continue
        if kind == "plot" and path.suffix.lower() not in PLOT_SUFFIXES:
            problems.append(f"{flag} {raw}: unsupported chart format {path.suffix or '(none)'}; "
                            f"allowed: {', '.join(PLOT_SUFFIXES)}")
        if path.exists() and not os.access(path, os.W_OK):
            problems.append(f"{flag} {raw}: the file exists and is not writable")
        why = _writable_dir(path.parent, made)
        if why:
            problems.append(f"{flag} {raw}: cannot create it: {why}")
        key = str(path.resolve())
        if key in seen:
            problems.append(f"{flag} {raw}: the same file as --{seen[key]}")
        seen[key] = kind
    if problems:
        for d in reversed(made):  # only what this check created, and only while empty
            try:
                d.rmdir()
            except OSError:
                pass
    return problems


def _atomic(path: Path, write: Callable[[Path], object]) -> Path:
    # never a half-written file at `path`; the same suffix: matplotlib picks its format by it
    return atomic_file(path, write, suffix=path.suffix)


def write_outputs(result: BenchResult, paths: dict[str, str | None]) -> tuple[list[str], list[str]]:
    """Write each requested file; (lines saying what was written, lines saying what failed
    and where it went instead)."""
    writers = {"json": lambda p: p.write_text(result.json()),
               "markdown": lambda p: p.write_text(markdown(result)),
               "plot": lambda p: plot(result, p)}
    wrote, failed = [], []
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for kind, raw in paths.items():
        if not raw:
            continue
        try:
            wrote.append(f"wrote {_atomic(Path(raw).expanduser(), writers[kind])}")
        except Exception as e:  # noqa: BLE001  (the measurements must survive a bad path)
            fallback = Path(tempfile.gettempdir()) / f"fastpipes-bench-{stamp}{KINDS[kind]}"
            try:
                _atomic(fallback, writers[kind])
                failed.append(f"could not write --{kind} {raw} ({type(e).__name__}: {e}); "
                              f"wrote {fallback} instead")
            except Exception as e2:  # noqa: BLE001
                failed.append(f"could not write --{kind} {raw} ({type(e).__name__}: {e}) nor "
                              f"{fallback} ({type(e2).__name__}: {e2})")
    return wrote, failed
