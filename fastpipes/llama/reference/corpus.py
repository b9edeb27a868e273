"""The reference models' text: the Python standard library's own ``.py`` sources, which
every machine with Python has offline. Byte-level: byte b is token b + 3 (ByT5's ids:
pad 0, eos 1, unk 2 come first).

>>> corpus = stdlib_corpus(train_bytes=1 << 20, heldout_bytes=64 << 10)  # doctest: +SKIP
"""
from __future__ import annotations

import sys
import sysconfig
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch

from fastpipes.errors import InputError

BYTE_OFFSET = 3
# not the standard library proper (installed packages), or text that is not typical code
# (the test suites hold deliberately broken encodings and huge data literals)
EXCLUDED_DIRS = ("site-packages", "dist-packages", "test", "tests", "idlelib", "__pycache__")


@dataclass
class Corpus:
    train: torch.Tensor  # [T] int16 token ids, the training files concatenated
    heldout: bytes  # the held-out files' text, concatenated
    info: dict  # what it is and how it was cut, for the model's metadata
    train_files: list[str]  # relative paths, in reading order
    heldout_files: list[str]


def encode(data: bytes) -> torch.Tensor:
    """bytes -> token ids [len(data)] (int64), the tokenizer's mapping."""
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).long() + BYTE_OFFSET


def stdlib_corpus(train_bytes: int, heldout_bytes: int, heldout_every: int = 20,
                  min_bytes: int = 1, root: str | Path | None = None) -> Corpus:
    """The ``.py`` files under `root` (default: this Python's standard library) in sorted
    order of their relative paths, split by file: a file is held out when crc32(relative
    path) % `heldout_every` == 0 (about 5% for 20), so the split does not depend on which
    other files exist. Reading stops when both splits reach their caps (bytes)."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    files = sorted((p.relative_to(root).as_posix(), p) for p in root.rglob("*.py")
                   if not set(p.relative_to(root).parts[:-1]) & set(EXCLUDED_DIRS))
    cap = {"train": train_bytes, "heldout": heldout_bytes}
    parts: dict[str, list[bytes]] = {"train": [], "heldout": []}
    used: dict[str, list[str]] = {"train": [], "heldout": []}
    size = {"train": 0, "heldout": 0}
    for rel, path in files:
        if all(size[s] >= cap[s] for s in cap):
            break
        split = "heldout" if zlib.crc32(rel.encode()) % heldout_every == 0 else "train"
        if size[split] < cap[split]:
            data = path.read_bytes()[: cap[split] - size[split]]
            parts[split].append(data)
            used[split].append(rel)
            size[split] += len(data)
    if min(size.values()) < min_bytes:
        raise InputError(f"the .py files under {root} give {size['train']} training and "
                         f"{size['heldout']} held-out bytes; need at least {min_bytes} of each")
    info = {"source": "Python standard library .py sources", "root": str(root),
            "python": sys.version.split()[0], "files_seen": len(files),
            "excluded_dirs": list(EXCLUDED_DIRS), "order": "sorted relative paths",
            "heldout_rule": f"crc32(relative path) % {heldout_every} == 0",
            "train_files": len(used["train"]), "train_bytes": size["train"],
            "heldout_files": len(used["heldout"]), "heldout_bytes": size["heldout"]}
    return Corpus(encode(b"".join(parts["train"])).to(torch.int16), b"".join(parts["heldout"]),
                  info, used["train"], used["heldout"])
