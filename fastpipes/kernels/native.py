"""fastpipes' own C++ kernels: built for this CPU on first use, cached, loaded with ctypes.

A kernel's source lives in ``kernels/csrc/`` (``<name>.cpp``, which may include the
directory's ``.h`` files). :func:`library` compiles it with the system C++ compiler
(``$CXX``, else ``g++``/``c++``) and ``-O3 -march=native`` into the cache part ``kernels/``
(once per source, headers, compiler, flags and CPU: all are in the file's key) and
loads it. A shared library is code, so the cache's trust rules apply as to every other part
(:func:`fastpipes.cache.private_dir`, :func:`~fastpipes.cache.trusted_file`); the file is
written atomically, so two processes building at once both end with a whole library.

When no compiler works, :func:`library` raises :class:`NativeUnavailable` saying why, and
callers report it (the attention pass's preflight refuses ``backend: native`` with it).
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
from pathlib import Path

from fastpipes.cache import open_part, trusted_file
from fastpipes.errors import FastpipesError
from fastpipes.files import atomic_file

CSRC = Path(__file__).parent / "csrc"
# -fopenmp: at run time the kernels share the libgomp.so.1 PyTorch has loaded (same soname),
# so they use its thread pool instead of starting threads that compete with its spinning ones
FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-pthread", "-fopenmp")
COMPILE_TIMEOUT_S = 300


class NativeUnavailable(FastpipesError):
    """A native kernel cannot be built or loaded here (no compiler, a failed build)."""


def compiler() -> str:
    """The C++ compiler :func:`library` uses, or NativeUnavailable."""
    for name in filter(None, (os.environ.get("CXX"), "g++", "c++")):
        path = shutil.which(name)
        if path:
            return path
    raise NativeUnavailable("no C++ compiler found ($CXX, g++ or c++ on PATH); fastpipes' "
                            "native kernels are built on first use")


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.processor()


def _key(source: bytes, cxx: str) -> str:
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True,
                             timeout=30).stdout.splitlines()[:1]
    h = hashlib.sha256(source)
    for part in (*version, *FLAGS, _cpu_flags(), platform.machine()):
        h.update(b"\0" + part.encode())
    return h.hexdigest()[:20]


def _build(src: Path, out: Path, cxx: str) -> None:
    def write(tmp: Path) -> None:
        proc = subprocess.run([cxx, *FLAGS, str(src), "-o", str(tmp)], capture_output=True,
                              text=True, timeout=COMPILE_TIMEOUT_S)
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-12:])
            raise NativeUnavailable(f"building {src.name} with {cxx} failed "
                                    f"(exit {proc.returncode}):\n{tail}")

    atomic_file(out, write, mode=0o700)


@functools.lru_cache(maxsize=None)
def library(name: str) -> ctypes.CDLL:
    """The kernel library built from ``csrc/<name>.cpp`` for this CPU (built on first use,
    then read from the cache). NativeUnavailable when it cannot be built or loaded."""
    src = CSRC / f"{name}.cpp"
    cxx = compiler()
    try:
        source = src.read_bytes() + b"".join(h.read_bytes() for h in sorted(CSRC.glob("*.h")))
        path = open_part("kernels") / f"{name}-{_key(source, cxx)}.so"
        if not path.exists():
            _build(src, path, cxx)
        return ctypes.CDLL(str(trusted_file(path)))
    except (OSError, subprocess.SubprocessError) as e:
        raise NativeUnavailable(f"the native kernel {name} cannot be built or loaded: {e}"
                                ) from None


__all__ = ["library", "compiler", "NativeUnavailable"]
