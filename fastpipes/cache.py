"""The fastpipes cache directory: auto decisions and compiled artifacts.

Location: ``$FASTPIPES_CACHE_DIR``, else ``~/.cache/fastpipes``. Inside it:

- ``auto/``      recipe="auto" decisions (JSON, one per model/shapes/hardware/torch key);
- ``inductor/``  Inductor's on-disk caches (FX graphs, AOTAutograd entries, generated C++
                 and its .so files) for components compiled with ``compile.cache: true``;
- ``artifacts/`` torch's portable cache bundles (``torch.compiler.save_cache_artifacts``),
                 one per compiled component, hot-loaded before its first call.

Everything here can be deleted at any time (``fastpipes cache clear``): the next start is
then a cold one, nothing else changes.

>>> from fastpipes.cache import cache_dir
>>> str(cache_dir()).endswith("fastpipes") or "FASTPIPES_CACHE_DIR" in __import__("os").environ
True
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

CACHE_ENV = "FASTPIPES_CACHE_DIR"
PARTS = {
    "auto": "recipe='auto' decisions",
    "inductor": "Inductor FX-graph / AOTAutograd caches and compiled kernels",
    "artifacts": "portable torch.compile cache bundles (one per compiled component)",
    "models": "reference models trained here (python -m fastpipes.pipelines.llama_reference)",
}


def cache_dir() -> Path:
    """Where fastpipes keeps caches: $FASTPIPES_CACHE_DIR, else ~/.cache/fastpipes."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fastpipes"


def part_dir(part: str) -> Path:
    if part not in PARTS:
        raise KeyError(f"unknown cache part {part!r}; allowed: {', '.join(PARTS)}")
    return cache_dir() / part


def usage() -> dict[str, dict]:
    """Per part: path, number of files and bytes on disk (missing parts count zero)."""
    out = {}
    for part, what in PARTS.items():
        path = part_dir(part)
        files = [p for p in path.rglob("*") if p.is_file()] if path.exists() else []
        out[part] = {"path": str(path), "what": what, "files": len(files),
                     "bytes": sum(p.stat().st_size for p in files)}
    return out


def clear(parts: list[str] | None = None) -> list[Path]:
    """Delete the named parts (all when None); returns the directories removed."""
    removed = []
    for part in parts or list(PARTS):
        path = part_dir(part)
        if path.exists():
            shutil.rmtree(path)
            removed.append(path)
    return removed
