"""``fastpipes cache clear``: remove what fastpipes created in its cache, and nothing else
(and ``cache info``: count only that, :func:`usage`).

``FASTPIPES_CACHE_DIR`` can name any directory, ``$HOME`` included, where ``models/`` or
``auto/`` may be the user's own. So clear decides what is fastpipes' own, entry by entry:

- a directory fastpipes created as the cache root or one of its parts holds a marker file
  (:data:`fastpipes.cache.MARKER`, written by ``private_dir`` when it makes the directory):
  a part with the marker is fastpipes' own and is removed whole;
- in a part without the marker (made by a fastpipes older than the marker, or a directory
  that was there before), only entries with fastpipes' own names and layout are removed
  (:data:`OWN`: ``auto/<hex key>.json``, ``artifacts/<component>-<hex>.bin``,
  ``aoti/<component>-<hex>.pt2|json``, Inductor's own directories, ``models/llama-<name>``,
  ``openvino/<component>-<hex>.xml|bin|json``); the part itself goes once it is empty;
- a part that is a symbolic link or a plain file, and every other entry, is kept, and
  clear names each one it kept and why (CacheError: the command exits non-zero).

>>> removed, kept = plan_clear(["auto"])  # doctest: +SKIP
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Callable

from fastpipes.cache import MARKER, PARTS, cache_dir, part_dir
from fastpipes.errors import CacheError

_HEX_FILE = re.compile(r"[a-z0-9]{20,}\.(cpp|so|py|h|json|lock|o|best_config|kernel_perf)")
INDUCTOR_DIRS = {"aotautograd", "fxgraph", "locks", "precompiled_headers", "triton", "cache",
                 "kernel", "cpp", "compile_subproc", "pt2_remote"}


def _plain_file(p: Path) -> bool:
    return p.is_file() and not p.is_symlink()


def _plain_dir(p: Path) -> bool:
    return p.is_dir() and not p.is_symlink()


def _inductor_entry(p: Path) -> bool:
    """One of Inductor's named directories, or a two-character code directory holding only
    Inductor's hash-named sources and libraries."""
    if not _plain_dir(p):
        return False
    if p.name in INDUCTOR_DIRS:
        return True
    return bool(re.fullmatch(r"[a-z0-9]{2}", p.name)) and all(
        _plain_file(f) and _HEX_FILE.fullmatch(f.name) for f in p.iterdir())


def _model_entry(p: Path) -> bool:
    """A reference model directory (fastpipes.llama.reference) or its lock or
    building area."""
    if _plain_dir(p):
        # reference.json is what fastpipes writes last; a llama-* directory without it may
        # be anyone's model
        return p.name == ".building" or (p.name.startswith("llama-") and (
            p / "reference.json").is_file())
    return _plain_file(p) and bool(re.fullmatch(r"\.llama-[\w.-]+\.lock", p.name))


# part -> is this entry of the part (made by a fastpipes without markers) fastpipes' own?
OWN: dict[str, Callable[[Path], bool]] = {
    # (a leftover temporary file: fastpipes.files.temporary_name, or an older fastpipes' .tmp)
    "auto": lambda p: _plain_file(p) and bool(
        re.fullmatch(r"[0-9a-f]{24}\.(json|tmp)|\.[0-9a-f]{24}\.json\.\d+\.tmp", p.name)),
    "artifacts": lambda p: _plain_file(p) and bool(
        re.fullmatch(r"[\w-]+-[0-9a-f]{20}\.(bin|tmp)|\.[\w-]+-[0-9a-f]{20}\.bin\.\d+\.tmp",
                     p.name)),
    "aoti": lambda p: _plain_file(p) and bool(
        re.fullmatch(r"[\w-]+-[0-9a-f]{24}(\.tmp)?\.(pt2|json)"
                     r"|\.[\w-]+-[0-9a-f]{24}\.(pt2|json)\.\d+\.tmp(\.pt2)?", p.name)),
    "inductor": _inductor_entry,
    "models": _model_entry,
    # layers quantized while a model directory loads (fastpipes.llama.quantized_load)
    "weights": lambda p: _plain_file(p) and bool(
        re.fullmatch(r"\.?load-[\w.-]+\.safetensors(\.\d+\.tmp)?", p.name)),
    # converted components (fastpipes.passes.openvino_cache)
    "openvino": lambda p: _plain_file(p) and bool(
        re.fullmatch(r"[\w-]+-[0-9a-f]{20}(\.tmp)?\.(xml|bin|json)", p.name)),
    # C++ kernels built for this CPU (fastpipes.kernels.native; files.temporary_name)
    "kernels": lambda p: _plain_file(p) and bool(
        re.fullmatch(r"\.?[\w-]+-[0-9a-f]{20}\.so(\.\d+\.tmp)?", p.name)),
}
assert set(OWN) == set(PARTS), "every cache part says what of it is fastpipes' own"


def _common(p: Path) -> bool:
    """Entries any directory fastpipes made may hold: its marker, a leftover write probe."""
    return _plain_file(p) and (p.name == MARKER or p.name.startswith(".fastpipes-probe-"))


def _split(part: str, path: Path) -> tuple[list[Path], list[Path]]:
    """(what fastpipes made, the other entries) of part directory `path` (a plain one)."""
    if (path / MARKER).is_file():
        return [path], []  # fastpipes made this directory: all of it is the cache's
    entries = sorted(path.iterdir())
    others = [e for e in entries if not (_common(e) or OWN[part](e))]
    if not others:
        return [path], []  # an older fastpipes' part: nothing in it but its own
    return [e for e in entries if e not in others], others


def plan_clear(parts: list[str] | None = None) -> tuple[list[Path], list[str]]:
    """(paths fastpipes may remove, 'path: why it is kept' for the rest) of `parts`."""
    remove, keep = [], []
    for part in parts or list(PARTS):
        path = part_dir(part)
        if path.is_symlink():
            keep.append(f"{path}: a symbolic link (to {path.readlink()}), not a directory "
                        "fastpipes made; remove the link by hand if you mean to")
        elif not path.exists():
            continue
        elif not path.is_dir():
            keep.append(f"{path}: a file, not a cache part fastpipes made")
        else:
            ours, others = _split(part, path)
            remove += ours
            if not others:
                continue
            shown = ", ".join(e.name for e in others[:5]) + (
                f" and {len(others) - 5} more" if len(others) > 5 else "")
            keep.append(f"{path}: {len(others)} entr{'y' if len(others) == 1 else 'ies'} "
                        f"fastpipes did not create ({shown}); a directory fastpipes makes "
                        f"holds {MARKER}, and this one does not")
    return remove, keep


def clear(parts: list[str] | None = None) -> list[Path]:
    """Delete what fastpipes created of the named parts (all when None); returns the paths
    removed. Then CacheError names everything kept (not fastpipes' own) and each path that
    could not be removed, and says what was removed."""
    remove, kept = plan_clear(parts)
    removed, failed = [], []
    for path in remove:
        try:
            if _plain_dir(path):
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError as e:
            where = f" ({e.filename})" if e.filename not in (None, str(path)) else ""
            failed.append(f"{path}: {e.strerror or e}{where}")
            continue
        removed.append(path)
    if failed or kept:
        lines = []
        if kept:
            lines.append("kept what fastpipes did not create (cache clear removes only its "
                         "own): " + "; ".join(kept))
        if failed:
            lines.append("could not remove " + "; ".join(failed) + ". Check the permissions "
                         f"of the cache directory {cache_dir()} (or delete it by hand)")
        if removed:
            lines.append(f"removed: {', '.join(map(str, removed))}")
        raise CacheError("\n".join(lines))
    return removed


def _files(paths: list[Path]) -> list[Path]:
    """The regular files in `paths` and under its directories (no symbolic link followed),
    markers left out."""
    out = [p for p in paths if _plain_file(p) and p.name != MARKER]
    for top in filter(_plain_dir, paths):
        for root, _, names in os.walk(top):  # os.walk follows no directory link
            out += [f for f in (Path(root, n) for n in names)
                    if _plain_file(f) and f.name != MARKER]
    return out


def usage() -> dict[str, dict]:
    """Per part: its path, what it holds, and the files and bytes fastpipes made there (what
    ``cache clear`` removes); ``others``: the entries there fastpipes did not make (a
    $FASTPIPES_CACHE_DIR that is $HOME may have a models/ of yours), neither counted nor
    removed. A missing part counts zero."""
    out = {}
    for part, what in PARTS.items():
        path = part_dir(part)
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            ours, others = [], [path]
        elif path.is_dir():
            ours, others = _split(part, path)
        else:
            ours, others = [], []
        files = _files(ours)
        out[part] = {"path": str(path), "what": what, "files": len(files),
                     "bytes": sum(f.stat().st_size for f in files), "others": len(others)}
    return out
