"""What a compiled component does at its first call: time it, fall back to eager when the
compile fails (with ``fallback: eager``), and persist / hot-load its compiled artifacts in
the fastpipes cache (see fastpipes/passes/compile.py for the pass itself).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn as nn

from fastpipes.cache import INDUCTOR_ENV, InductorLocation, drop_bad_entry, trusted_file
from fastpipes.errors import CacheError
from fastpipes.files import atomic_write
from fastpipes.fingerprint import machine_fingerprint, structure_signature
from fastpipes.hardware import detect
from fastpipes.progress import heartbeat
from fastpipes.report import PassStatus

COMPILE_TIME_ATTR = "_fastpipes_compile_time_s"


_CACHE_COUNTERS = (("inductor", "fxgraph_cache_hit"), ("inductor", "fxgraph_cache_miss"),
                   ("inductor", "fxgraph_cache_bypass"), ("aot_autograd", "autograd_cache_hit"),
                   ("aot_autograd", "autograd_cache_miss"),
                   ("aot_autograd", "autograd_cache_bypass"))


@contextmanager
def inductor_cache_dir(directory: Path | None) -> Iterator[None]:
    """Inductor's on-disk caches live in `directory` inside the block (None: unchanged).

    Scoped, not process-wide: the previous TORCHINDUCTOR_CACHE_DIR (or its absence) is
    restored after the block, so other compiles in the process keep torch's default.
    """
    if directory is None:
        yield
        return
    before = os.environ.get(INDUCTOR_ENV)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)  # checked when applied
    os.environ[INDUCTOR_ENV] = str(directory)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(INDUCTOR_ENV, None)
        else:
            os.environ[INDUCTOR_ENV] = before


def cache_counts() -> dict[str, int]:
    """Torch's compile-cache counters (hits / misses / bypasses) so far in this process."""
    from torch._dynamo.utils import counters

    return {name: int(counters[group][name]) for group, name in _CACHE_COUNTERS}


def artifact_key(name: str, module: nn.Module, kw: dict[str, Any]) -> str:
    """Names a component's portable bundle: structure, compile arguments, torch, CPU ISA."""
    payload = {"component": name, "model": structure_signature({name: module}),
               "compile": kw, **machine_fingerprint(detect())}
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return f"{name.replace('.', '_')}-{hashlib.sha256(blob).hexdigest()[:20]}"


@dataclass
class CompileCache:
    """Where one component's compiled artifacts persist (see the module docstring)."""

    inductor_dir: Path | None  # None: Inductor's directory as the environment says
    bundle: Path | None  # None: no portable bundle (cache off, or artifacts/ unusable)

    @classmethod
    def for_component(cls, name: str, module: nn.Module, kw: dict[str, Any],
                      where: InductorLocation) -> "CompileCache":
        """The cache of component `name` where :func:`inductor_location` said."""
        key = artifact_key(name, module, kw)
        return cls(where.inductor_dir, where.artifacts / f"{key}.bin" if where.artifacts else None)

    def where(self) -> str:
        return str(self.inductor_dir or os.environ.get(INDUCTOR_ENV))

    def load_bundle(self, warn) -> bool:
        """Hot-load the saved bundle into Inductor's caches; a bad file is a warning, and so
        is one that must not be trusted (a bundle is pickled code)."""
        if self.bundle is None or not self.bundle.exists():
            return False
        try:  # torch logs and returns None for bytes it cannot read
            trusted_file(self.bundle)
            if torch.compiler.load_cache_artifacts(self.bundle.read_bytes()) is not None:
                return True
            why = "torch could not read it (see its log)"
        except CacheError as e:
            why = str(e)
        except Exception as e:  # noqa: BLE001  (a stale or corrupt bundle only costs time)
            why = f"{type(e).__name__}: {e}"
        warn(f"compile: ignoring cache bundle {self.bundle}: {why}")
        return False

    def save_bundle(self, warn) -> None:
        if self.bundle is None:
            return
        try:
            saved = torch.compiler.save_cache_artifacts()
            if not saved:
                return
            # yours alone, and atomic: a crash never leaves half a bundle
            atomic_write(self.bundle, saved[0], mode=0o600)
        except Exception as e:  # noqa: BLE001  (the compile itself succeeded)
            warn(f"compile: could not save the cache bundle {self.bundle}: "
                 f"{type(e).__name__}: {e}")

    def drop_bad_entry(self, error: BaseException) -> Path | None:
        """Remove the Inductor cache entry that made this compile fail (None: `error` is
        not such a failure), and the bundle, whose loading would put it back."""
        root = os.environ.get(INDUCTOR_ENV)
        if not root:  # no Inductor directory of ours in use: nothing of ours to drop
            return None
        entry = drop_bad_entry(error, Path(root))
        if entry is not None and self.bundle is not None:
            self.bundle.unlink(missing_ok=True)
        return entry


def compile_time_s(module: nn.Module) -> float | None:
    """Seconds the first compiled call of `module` took (tracing + compiling + one run),
    or None if it is not compiled by this pass or has not been called yet. The same number
    lands in ``report.extra["compile_time_s"][component]`` of the accelerate() report.

    >>> model(x); compile_time_s(model)  # doctest: +SKIP
    41.7
    """
    return module.__dict__.get(COMPILE_TIME_ATTR)


def _compile_failures() -> tuple[type[BaseException], ...]:
    """Exception types that mean "compiling failed" (as opposed to an error in the model)."""
    from torch._dynamo import exc

    return (exc.TorchDynamoException,)  # Unsupported, BackendCompilerFailed (InductorError), ...


class FirstCall:
    """Installed as ``module._compiled_call_impl``: times the first call, and with
    fallback eager turns a compile failure into eager execution plus a report warning.

    After a successful first call with fallback ``error`` the raw compiled function takes
    its place, so steady-state calls pay no extra Python frame.
    """

    def __init__(self, module: nn.Module, compiled, name: str, report, fallback_eager: bool,
                 cache: CompileCache | None = None, verbose: bool = True):
        self.module, self.compiled, self.name = module, compiled, name
        self.report, self.fallback_eager = report, fallback_eager  # report kept to warn later
        self.cache, self.verbose = cache, verbose
        self.failures = _compile_failures()
        self.first = True

    def __call__(self, *args, **kwargs):
        if not self.first:  # only reached with fallback eager: keep catching recompiles
            try:
                return self.compiled(*args, **kwargs)
            except self.failures as e:
                return self._fall_back(e, args, kwargs)
        # silent for minutes otherwise (SDXL's UNet: 282 s): say so, and keep saying it
        with heartbeat("compile", f"{self.name}: first call, compiling it (torch.compile)",
                       enabled=self.verbose, announce=True):
            return self._first_call(args, kwargs)

    def _first_call(self, args: tuple, kwargs: dict):
        t0 = time.perf_counter()
        counts = cache_counts()
        warn = self.report.warnings.append
        with inductor_cache_dir(self.cache.inductor_dir if self.cache else None):
            loaded = self.cache.load_bundle(warn) if self.cache else False
            try:
                try:
                    out = self.compiled(*args, **kwargs)
                except self.failures as e:
                    bad = self.cache.drop_bad_entry(e) if self.cache else None
                    if bad is None:
                        raise
                    warn(f"compile: {self.name}: dropped the unreadable Inductor cache entry "
                         f"{bad} ({type(e).__name__}) and compiled again")
                    out = self.compiled(*args, **kwargs)  # once: a second failure is real
            except self.failures as e:
                if not self.fallback_eager:
                    raise
                return self._fall_back(e, args, kwargs)
            delta = {k: v - counts[k] for k, v in cache_counts().items()}
            if self.cache and (delta["fxgraph_cache_miss"] or delta["autograd_cache_miss"]):
                self.cache.save_bundle(warn)  # something new was compiled: keep it
        seconds = time.perf_counter() - t0
        self.module.__dict__[COMPILE_TIME_ATTR] = seconds
        self.report.extra.setdefault("compile_time_s", {})[self.name] = seconds
        if self.cache:
            self.report.extra.setdefault("compile_cache", {})[self.name] = {
                "dir": self.cache.where(),
                "bundle": str(self.cache.bundle) if self.cache.bundle else None,
                "bundle_loaded": loaded, **{k: v for k, v in delta.items() if v}}
        self.first = False
        if not self.fallback_eager:
            self.module._compiled_call_impl = self.compiled
        return out

    def _fall_back(self, e: BaseException, args, kwargs):
        # run eager first: if eager fails too, the error is the model's (or the input's),
        # not the compiler's, and it propagates with the compiled call left in place
        out = self.module._call_impl(*args, **kwargs)
        self.module._compiled_call_impl = None  # plain eager from now on
        first_line = (str(e).strip().splitlines() or [""])[0][:300]
        self.report.warnings.append(
            f"compile: {self.name}: torch.compile failed, running eager instead "
            f"(fallback: eager): {type(e).__name__}: {first_line}")
        rec = self.report.record("compile")
        rec.status = PassStatus.fallback
        rec.reason = f"{self.name} runs eager: compilation failed ({type(e).__name__})"
        return out
