"""The fastpipes cache directory: auto decisions and compiled artifacts.

Location: ``$FASTPIPES_CACHE_DIR``, else ``~/.cache/fastpipes``. Inside it:

- ``auto/``      recipe="auto" decisions (JSON, one per model/shapes/hardware/torch key);
- ``inductor/``  Inductor's on-disk caches (FX graphs, AOTAutograd entries, generated C++
                 and its .so files) for components compiled with ``compile.cache: true``;
- ``artifacts/`` torch's portable cache bundles (``torch.compiler.save_cache_artifacts``),
                 one per compiled component, hot-loaded before its first call;
- ``aoti/``      AOTInductor packages (``compile.backend: aot_inductor``: native code, no
                 weights), one per component and input shape, a SHA-256 file beside each;
- ``openvino/``  components converted to OpenVINO IR (fastpipes.passes.openvino_cache);
- ``kernels/``   fastpipes' C++ kernels built for this CPU (fastpipes.kernels.native).

Everything here can be deleted at any time (``fastpipes cache clear``): the next start is
then a cold one, nothing else changes. A directory fastpipes makes here holds :data:`MARKER`;
``cache clear`` removes only what fastpipes made (fastpipes.cache_clear), since
``FASTPIPES_CACHE_DIR`` may name a directory that holds the user's own files too.

What the caches trust: ``inductor/`` and ``artifacts/`` hold pickles, and loading a pickle
runs code. So the cache directory and its parts are created mode 0700 and are used only
while they belong to you and nobody else can write them (:func:`private_dir`); a bundle file
must pass the same check (:func:`trusted_file`). Anything else is ignored with a warning: a
cache bundle is code, copy only your own.

>>> from fastpipes.cache import cache_dir
>>> str(cache_dir()).endswith("fastpipes") or "FASTPIPES_CACHE_DIR" in __import__("os").environ
True
"""
from __future__ import annotations

import atexit
import os
import shutil
import stat
import tempfile
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from fastpipes.errors import CacheError

CACHE_ENV = "FASTPIPES_CACHE_DIR"
MARKER = ".fastpipes-cache"  # in each cache directory fastpipes made (see private_dir)
MARKER_TEXT = ("fastpipes made this directory; `fastpipes cache clear` may remove it and "
               "what is in it\n")
INDUCTOR_ENV = "TORCHINDUCTOR_CACHE_DIR"
PARTS = {
    "auto": "recipe='auto' decisions",
    "inductor": "Inductor FX-graph / AOTAutograd caches and compiled kernels",
    "artifacts": "portable torch.compile cache bundles (one per compiled component)",
    "aoti": "ahead-of-time compiled packages (compile.backend: aot_inductor), with checksums",
    "models": "reference models trained here (python -m fastpipes.llama.reference)",
    "weights": "weight-only quantized layers of models loaded from a directory with a recipe",
    "openvino": "components converted to OpenVINO IR by the openvino pass",
    "kernels": "fastpipes' C++ kernels built for this CPU (shared libraries)",
}


def cache_dir() -> Path:
    """Where fastpipes keeps caches: $FASTPIPES_CACHE_DIR, else ~/.cache/fastpipes."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fastpipes"


def part_dir(part: str) -> Path:
    if part not in PARTS:
        raise KeyError(f"unknown cache part {part!r}; allowed: {', '.join(PARTS)}")
    return cache_dir() / part


def untrusted(path: Path) -> str | None:
    """Why the cache directory or file `path` must not be trusted, or None when it may.

    Trusted: owned by you (the effective user) and not writable by group or others, since
    whoever can write a cache can put a pickle there that runs code in your process.
    """
    st = path.stat()
    if st.st_uid != os.geteuid():
        return (f"owned by another user (uid {st.st_uid}; you are uid {os.geteuid()}: use "
                "a cache directory of your own)")
    writers = [who for bit, who in ((stat.S_IWGRP, "group"), (stat.S_IWOTH, "others"))
               if st.st_mode & bit]
    if writers:
        return (f"writable by {' and '.join(writers)} (mode {oct(st.st_mode & 0o7777)}; "
                f"if you trust what is in it: chmod go-w {path})")
    return None


def private_dir(path: Path) -> Path:
    """`path` as a directory fit to hold a cache, else CacheError saying why.

    Created mode 0700 when missing, and so is each missing parent (``mkdir -p`` would
    make those 0755, e.g. ~/.cache/fastpipes above models/); an existing one must be a
    directory, yours, not writable by group or others (:func:`untrusted`), and writable by
    you (a file is created and removed to be sure: permissions alone miss read-only mounts).
    """
    made = [p for p in (path.parent, path) if not p.exists() and not p.is_symlink()]
    try:
        missing = []
        for p in (path, *path.parents):
            if p.exists() or p.is_symlink():
                break
            missing.append(p)
        for p in reversed(missing):
            p.mkdir(mode=0o700, exist_ok=True)
        path.mkdir(mode=0o700, exist_ok=True)  # raises FileExistsError for a file
    except FileExistsError:
        raise CacheError(f"cache directory {path} cannot be used: it is a file, not a "
                         "directory") from None
    except OSError as e:
        raise CacheError(f"cache directory {path} cannot be created: {e.strerror or e}"
                         + (f" ({e.filename})" if e.filename not in (None, str(path)) else "")
                         ) from None
    why = untrusted(path)
    if why:
        raise CacheError(f"cache directory {path} is not trusted: a cache holds pickled "
                         f"code, and it is {why}")
    try:
        fd, probe = tempfile.mkstemp(prefix=".fastpipes-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise CacheError(f"cache directory {path} is not writable: {e.strerror or e}") from None
    for d in made:
        _mark_if_cache(d)
    return path


def _mark_if_cache(directory: Path) -> None:
    """Leave :data:`MARKER` in `directory`, just created by fastpipes, if it is the cache
    root or one of its parts: what ``cache clear`` may remove whole (fastpipes.cache_clear)."""
    root = os.path.abspath(cache_dir())
    here = os.path.abspath(directory)
    if here == root or (os.path.dirname(here) == root and directory.name in PARTS):
        try:
            (directory / MARKER).write_text(MARKER_TEXT)
        except OSError:
            pass  # then clear treats it as an older fastpipes' directory, entry by entry


def trusted_file(path: Path) -> Path:
    """`path` (a cache file about to be loaded) if it may be trusted, else CacheError."""
    why = untrusted(path)
    if why:
        raise CacheError(f"cache file {path} is not loaded: a cache bundle is code, and "
                         f"it is {why}")
    return path


def open_part(part: str) -> Path:
    """The directory of cache part `part`, ready to read and write: the cache directory and
    the part are created 0700 when missing and checked with :func:`private_dir` (CacheError
    when either cannot be used or trusted).

    >>> open_part("auto").name  # doctest: +SKIP
    'auto'
    """
    private_dir(cache_dir())
    return private_dir(part_dir(part))


def scratch_dir() -> Path:
    """A private (0700) temporary Inductor directory, removed when the process exits: not
    earlier, since code compiled into it stays loaded and torch may look there again."""
    path = tempfile.mkdtemp(prefix="fastpipes-inductor-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return Path(path)


@dataclass(frozen=True)
class InductorLocation:
    """Where one compile's Inductor caches and portable bundles go (:func:`inductor_location`)."""

    inductor_dir: Path | None  # None: Inductor's own directory passed the check; left as is
    artifacts: Path | None  # None: no bundles (cache off, or artifacts/ unusable)
    temporary: bool = False  # inductor_dir is a private scratch directory of this process
    warnings: tuple[str, ...] = ()


def inductor_location(persist: bool) -> InductorLocation:
    """Where a compile's Inductor caches and portable bundles go, checked when the compile
    pass is applied (not at the first call, where a failure would surface as a broken
    forward).

    A TORCHINDUCTOR_CACHE_DIR the user chose wins over ``inductor/``. With `persist`
    (``compile.cache: true``) Inductor works in the ``inductor/`` part and bundles go to
    ``artifacts/``; without it, Inductor's own directory (the user's, else torch's default)
    is checked and left as it is. Any directory Inductor would use that fails
    :func:`private_dir` is replaced by a private temporary one (:func:`scratch_dir`): the
    compile still works, the next process compiles from scratch, and a warning says so.

    torch 2.13 creates $TORCHINDUCTOR_CACHE_DIR while it imports its compiler (Dynamo's
    package cache, the compiler bisector): with a file there, importing it fails. So a
    user's directory is checked before torch is imported, and the compile pass imports and
    calls torch.compile with the temporary directory in place (see ``inductor_cache_dir``).
    """
    env = os.environ.get(INDUCTOR_ENV)
    problems: list[str] = []
    inductor: Path | None = None
    temporary = False
    try:
        if env:  # checked before torch is asked anything: see the end of the docstring
            private_dir(Path(env))
        try:
            from torch._inductor.runtime.cache_dir_utils import default_cache_dir
        except OSError as e:
            raise CacheError(f"torch cannot start its compiler, whose import creates its "
                             f"cache directory: {e}") from None
        # torch exports its default to the environment on first use: that is not a choice
        if not persist or (env and os.path.abspath(env) != os.path.abspath(default_cache_dir())):
            private_dir(Path(env or default_cache_dir()))
        else:
            inductor = open_part("inductor")
    except CacheError as e:
        inductor, temporary = scratch_dir(), True
        named = f"{INDUCTOR_ENV}: " if env and env in str(e) else ""
        problems.append(f"{named}{e}; compiling with a private temporary Inductor directory "
                        f"{inductor} instead, so the next process compiles from scratch")
    artifacts: Path | None = None
    if persist:
        try:
            artifacts = open_part("artifacts")
        except CacheError as e:
            if not any(str(e) in p for p in problems):  # the same cause is said once
                problems.append(f"{e}; compiled artifacts are not saved as bundles")
    return InductorLocation(inductor, artifacts, temporary, tuple(problems))


def drop_bad_entry(error: BaseException, root: Path) -> Path | None:
    """Remove the Inductor cache entry that made a compile fail with `error`; None if
    `error` is not such a failure or the entry is not inside `root` (the Inductor
    directory in use).

    In torch 2.13 an FX-graph cache file that unpickles to the wrong object (another torch
    wrote it, or it is damaged) is not skipped: ``GuardedCache.find_guarded_entry``
    (torch/_inductor/codecache.py) asserts ``hasattr(candidate, "guards_expr")``, and the
    AssertionError reaches the caller as BackendCompilerFailed on every run until the entry
    is removed. The entry is the directory of that frame's ``key`` (``cls`` knows where).
    """
    root = root.resolve()
    for frame in _frames(error):
        if frame.f_code.co_name != "find_guarded_entry":
            continue
        owner, key = frame.f_locals.get("cls"), frame.f_locals.get("key")
        if owner is None or not isinstance(key, str):
            continue
        entry = Path(owner._get_tmp_dir_for_key(key)).resolve()
        if entry == root or not entry.is_relative_to(root):
            return None
        shutil.rmtree(entry, ignore_errors=True)
        return entry
    return None


def _frames(error: BaseException) -> Iterator[types.FrameType]:
    """The frames of `error`'s traceback and of the errors it was raised from."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [error]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        tb = e.__traceback__
        while tb is not None:
            yield tb.tb_frame
            tb = tb.tb_next
        stack += [e.__cause__, e.__context__]

