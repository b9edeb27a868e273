"""A job's output directory: atomic writes and the per-item records that make a job resumable.

Layout under ``--out``::

    <the family's outputs>          masks/..., images/..., masks.json, completions.jsonl ...
    errors.jsonl                    one line per input that failed (rewritten every run)
    summary.json                    the last run's counts, throughput, recipe, start times
    .fastpipes/lock                 held (flock) by the run using the directory; has its pid
    .fastpipes/done/<key>.json      one per finished item: its record and fingerprint
    .fastpipes/failed/<key>.json    one per failed item: the error (retried on the next run)

Every file is written atomically (fastpipes.files: a temporary name in the same directory,
then ``os.replace``), so a killed job never leaves half a PNG or JSON. An item's outputs are
written before its ``done`` record: the record is the commit point, and a rerun skips
exactly the items whose record is there with the same fingerprint.
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from fastpipes.errors import InputError
from fastpipes.files import atomic_write, atomic_write_lines  # noqa: F401  (their home before)

STATE = ".fastpipes"


class OutDir:
    """The ``--out`` directory of a job.

    >>> out = OutDir(tmp_path)                                              # doctest: +SKIP
    >>> out.commit("cat", "f00d", {"masks/cat/0.png": png}, {"score": 0.9})  # doctest: +SKIP
    >>> out.done_fingerprint("cat")                                         # doctest: +SKIP
    'f00d'
    """

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()
        if self.root.exists() and not self.root.is_dir():
            raise InputError(f"--out {self.root} exists and is not a directory")
        self.done_dir = self.root / STATE / "done"
        self.failed_dir = self.root / STATE / "failed"
        try:
            self.done_dir.mkdir(parents=True, exist_ok=True)
            self.failed_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"--out {self.root}: cannot create it: {e.strerror or e}; "
                             "give a directory you can write") from None

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold ``.fastpipes/lock`` (``fcntl.flock``) for the run: a second run on the same
        directory fails at once, naming the process that holds it. The kernel drops the
        lock when its holder dies however it dies, so a lock left by a killed run never
        blocks; the file itself stays (removing it would race with the next run)."""
        path = self.root / STATE / "lock"
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock, as before
            yield
            return
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # held by a live process
                holder = os.read(fd, 200).decode(errors="replace").strip() or "unknown"
                raise InputError(
                    f"--out {self.root} is in use by another fastpipes run (pid {holder}; "
                    f"lock file {path}). Wait for it to finish (or stop it), or give "
                    "another --out; rerunning afterwards resumes where it stopped") from None
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            yield
        finally:
            os.close(fd)  # releases the flock

    def path(self, rel: str) -> Path:
        p = (self.root / rel).resolve()
        assert self.root.resolve() in p.parents, f"output {rel!r} escapes {self.root}"
        return p

    def write(self, rel: str, data: bytes | str) -> Path:
        return atomic_write(self.path(rel), data)

    def write_json(self, rel: str, obj: Any) -> Path:
        return self.write(rel, json.dumps(obj, indent=1))

    def done_fingerprint(self, key: str) -> str | None:
        """The fingerprint a finished item was made with, or None if it is not finished."""
        try:
            return json.loads((self.done_dir / f"{key}.json").read_text())["fingerprint"]
        except (OSError, ValueError, KeyError):  # missing, or unreadable: do it again
            return None

    def commit(self, key: str, fingerprint: str, files: dict[str, bytes], record: dict) -> None:
        """Write an item's files, then its done record (the commit point)."""
        for rel, data in files.items():
            self.write(rel, data)
        atomic_write(self.done_dir / f"{key}.json",
                     json.dumps({"fingerprint": fingerprint, "record": record}).encode())
        (self.failed_dir / f"{key}.json").unlink(missing_ok=True)

    def fail(self, key: str, fingerprint: str, error: dict) -> None:
        atomic_write(self.failed_dir / f"{key}.json",
                     json.dumps({"fingerprint": fingerprint, "key": key, **error}).encode())
        (self.done_dir / f"{key}.json").unlink(missing_ok=True)  # made from other settings

    def records(self, items: Iterable[tuple[str, str]]) -> Iterator[dict]:
        """Done records of (key, fingerprint) pairs, in that order; items not finished with
        that fingerprint are left out."""
        for key, fingerprint in items:
            try:
                data = json.loads((self.done_dir / f"{key}.json").read_text())
            except (OSError, ValueError):
                continue
            if data.get("fingerprint") == fingerprint:
                yield data["record"]

    def errors(self, keys: Iterable[str]) -> list[dict]:
        out = []
        for key in keys:
            path = self.failed_dir / f"{key}.json"
            if path.exists():
                try:
                    out.append(json.loads(path.read_text()))
                except ValueError:
                    continue
        return out
