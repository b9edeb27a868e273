"""compile: ``torch.compile`` of named components, in place.

Compilation is lazy: apply() only installs the compiled call (``module.compile()`` style:
it sets ``module._compiled_call_impl``, which accelerate()'s snapshot restores; see
:func:`_call_of` for why it does not call ``module.compile()`` itself); the graph is
traced and compiled on the first call. That first call is timed so benchmarks can report
compile time apart from steady-state time (:func:`compile_time_s`).

Mode and options: ``torch.compile`` refuses ``mode`` and ``options`` together. When a recipe
gives ``options`` (e.g. ``{freezing: true}``), the mode's own Inductor options
(``torch._inductor.list_mode_options(mode)``) are merged under them and only ``options`` is
passed, so ``mode: max-autotune`` + ``options: {freezing: true}`` means both.
``eager``/``aot_eager`` (debugging backends) ignore mode and options; the report says so.

No process-wide Inductor or Dynamo config is changed: per-compile ``options`` are scoped to
this compiled call by torch itself, so an FP32 reference in the same process is untouched.

Fast start (``cache: true``, the default): the first call runs with Inductor's on-disk caches
(FX graphs, AOTAutograd entries, generated kernels) pointed at the fastpipes cache directory
(``$FASTPIPES_CACHE_DIR/inductor``, default ``~/.cache/fastpipes/inductor``) instead of
``/tmp``, and the component's portable cache bundle (``torch.compiler.save_cache_artifacts``)
is saved to ``artifacts/`` after a compile that missed the cache and hot-loaded before the
next process's first call. A second process then skips Inductor's code generation and C++
builds; Dynamo still traces (seconds). ``TORCHINDUCTOR_CACHE_DIR`` set by the user wins.
The report's ``extra["compile_cache"][component]`` counts hits and misses of the first call.

The cache never makes a compile fail. Where Inductor will write is checked when the pass
is applied (:func:`fastpipes.cache.inductor_location`): a directory that cannot be created
or written, or that must not be trusted (owned by another user, writable by group or
others: it holds pickles) is replaced by a private temporary directory for this process,
with a warning in the report. A cache entry torch cannot read back
(:meth:`CompileCache.drop_bad_entry`) is dropped, with a warning, and compiled again once.

>>> fastpipes.accelerate(model, {"compile": {"mode": "max-autotune", "options": {"freezing": True}}})  # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import types
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn as nn

from fastpipes.cache import (INDUCTOR_ENV, InductorLocation, drop_bad_entry, inductor_location,
                             trusted_file)
from fastpipes.errors import CacheError, FastpipesError, Problem, RecipeError
from fastpipes.passes.base import PassContext, register_pass
from fastpipes.recipe.schema import Section

COMPILE_TIME_ATTR = "_fastpipes_compile_time_s"


class CompileMode(str, Enum):
    default = "default"
    reduce_overhead = "reduce-overhead"
    max_autotune = "max-autotune"
    max_autotune_no_cudagraphs = "max-autotune-no-cudagraphs"


class CompileBackend(str, Enum):
    inductor = "inductor"
    eager = "eager"  # dynamo tracing only: finds graph breaks, no speedup
    aot_eager = "aot_eager"  # + AOTAutograd: checks the traced graph, no speedup
    ipex = "ipex"  # registered by intel_extension_for_pytorch when it imports


class CompileFallback(str, Enum):
    error = "error"  # a compile failure at the first call raises
    eager = "eager"  # ... falls back to eager and is reported as a warning


@dataclass(frozen=True)
class CompileConfig(Section):
    components: list[str] = field(default_factory=list)  # [] = the adapter's default
    mode: CompileMode = CompileMode.default
    backend: CompileBackend = CompileBackend.inductor
    fullgraph: bool = False
    dynamic: bool | None = None  # None: torch decides (static first, dynamic on recompile)
    options: dict[str, Any] = field(default_factory=dict)  # Inductor options, e.g. freezing
    fallback: CompileFallback = CompileFallback.error
    cache: bool = True  # persist compiled artifacts in the fastpipes cache: fast second start


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
    from fastpipes.auto import machine_fingerprint, structure_signature
    from fastpipes.hardware import detect

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
            tmp = self.bundle.with_suffix(".tmp")
            tmp.unlink(missing_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # yours alone
            with os.fdopen(fd, "wb") as f:
                f.write(saved[0])
            tmp.replace(self.bundle)  # atomic: a crash never leaves half a bundle
        except Exception as e:  # noqa: BLE001  (the compile itself succeeded)
            warn(f"compile: could not save the cache bundle {self.bundle}: "
                 f"{type(e).__name__}: {e}")

    def drop_bad_entry(self, error: BaseException) -> Path | None:
        """Remove the Inductor cache entry that made this compile fail (None: `error` is
        not such a failure), and the bundle, whose loading would put it back."""
        entry = drop_bad_entry(error, Path(os.environ.get(INDUCTOR_ENV) or ""))
        if entry is not None and self.bundle is not None:
            self.bundle.unlink(missing_ok=True)
        return entry


def compile_kwargs(cfg: CompileConfig) -> dict[str, Any]:
    """The keyword arguments for torch.compile that `cfg` means (mode merged into options).

    >>> compile_kwargs(CompileConfig(mode=CompileMode.max_autotune, options={"freezing": True}))  # doctest: +SKIP
    {'backend': 'inductor', 'fullgraph': False, 'dynamic': None, 'options': {'max_autotune': True, ..., 'freezing': True}}
    """
    kw: dict[str, Any] = {"backend": cfg.backend.value, "fullgraph": cfg.fullgraph,
                          "dynamic": cfg.dynamic}
    if cfg.backend is not CompileBackend.inductor:
        return kw  # debugging / third-party backends: mode and options are not theirs
    if cfg.options:
        from torch._inductor import list_mode_options

        kw["options"] = {**list_mode_options(cfg.mode.value, cfg.dynamic), **cfg.options}
    else:
        kw["mode"] = cfg.mode.value
    return kw


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
                 cache: CompileCache | None = None):
        self.module, self.compiled, self.name = module, compiled, name
        self.report, self.fallback_eager = report, fallback_eager  # report kept to warn later
        self.cache = cache
        self.failures = _compile_failures()
        self.first = True

    def __call__(self, *args, **kwargs):
        if not self.first:  # only reached with fallback eager: keep catching recompiles
            try:
                return self.compiled(*args, **kwargs)
            except self.failures as e:
                return self._fall_back(e, args, kwargs)
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
        rec.status = "fallback"
        rec.reason = f"{self.name} runs eager: compilation failed ({type(e).__name__})"
        return out


def _call_of(module: nn.Module, component: str = "module"):
    """The function torch.compile traces for `module`.

    Not ``module._call_impl`` itself (what ``nn.Module.compile()`` passes): in torch 2.13
    that frame and the forwards of torch.nn built-ins (``nn.Sequential``, ``nn.Linear``) are
    on Dynamo's skip list, so a built-in root compiles nothing at all. A frame of our own
    is traced and inlines the whole call, hooks included (as ``torch.compile(module)``
    does with its ``wrap_inline``).
    """

    def call(*args, **kwargs):
        return module._call_impl(*args, **kwargs)

    # a code object of its own per module: Dynamo keeps its compiled graphs (and counts
    # recompiles against torch._dynamo.config.recompile_limit) per code object, so
    # components sharing one would share one cache and show as each other's recompiles
    # (named after the component, not id(module): the name must be the same in the next
    # process, whose warm start looks the graphs up in the compile cache)
    name = "call_" + "".join(c if c.isalnum() else "_" for c in component)
    code = call.__code__.replace(co_name=name, co_qualname=name)
    return types.FunctionType(code, call.__globals__, name, call.__defaults__, call.__closure__)


def _check_options(ctx: PassContext, options: dict[str, Any]) -> None:
    """Unknown Inductor option names as one RecipeError (torch would raise a bare
    RuntimeError listing all ~400 known options)."""
    from torch._inductor import config

    from fastpipes.registry import did_you_mean

    known = config.get_config_copy()
    problems = [Problem(ctx.recipe.source, f"compile.options.{k}",
                        f"unknown Inductor option{did_you_mean(k.replace('-', '_'), known)}",
                        "names from torch._inductor.config, e.g. freezing, max_autotune")
                for k in options if k.replace("-", "_") not in known]
    if problems:
        raise RecipeError(problems, recipe=ctx.recipe.name)


def _require_ipex_backend() -> None:
    """The 'ipex' dynamo backend exists only once intel_extension_for_pytorch imported."""
    from fastpipes.hardware import import_ipex

    ipex, why = import_ipex()
    if ipex is None:
        raise FastpipesError(f"compile.backend 'ipex' is unavailable: {why}; "
                             "or use backend 'inductor'")


@register_pass("compile", CompileConfig, "torch.compile of components (lazy, first call timed)")
def apply(ctx: PassContext, cfg: CompileConfig) -> None:
    if cfg.backend is CompileBackend.ipex:
        _require_ipex_backend()
    kw = compile_kwargs(cfg)
    ignored = cfg.backend is not CompileBackend.inductor and (
        cfg.options or cfg.mode is not CompileMode.default)
    components = ctx.components("compile", cfg.components)
    # only Inductor writes artifacts; eager/aot_eager/ipex have nothing to persist
    where = inductor_location(cfg.cache) if cfg.backend is CompileBackend.inductor else None
    for problem in where.warnings if where else ():
        ctx.warn(problem)
    # torch creates its cache directory while importing its compiler: keep a bad one unseen
    with inductor_cache_dir(where.inductor_dir if where and where.temporary else None):
        if "options" in kw:
            _check_options(ctx, kw["options"])
        for name, module in components.items():
            # torch.compile pops keys from `options`: each component gets its own copy
            compiled = torch.compile(_call_of(module, name), **{**kw, **(
                {"options": dict(kw["options"])} if "options" in kw else {})})
            cache = (CompileCache.for_component(name, module, kw, where)
                     if where and (cfg.cache or where.temporary) else None)
            module._compiled_call_impl = FirstCall(module, compiled, name, ctx.report,
                                                   cfg.fallback is CompileFallback.eager, cache)
            shown = ", ".join(f"{k}={v}" for k, v in kw.items() if v not in (None, False))
            ctx.change(name, f"torch.compile({shown}), compiled lazily at the first call"
                       + (f"; mode/options ignored by backend {cfg.backend.value}"
                          if ignored else "")
                       + (f"; compiled in the temporary {cache.where()} (see warnings)"
                          if cache and where.temporary else
                          f"; compiled artifacts cached in {cache.where()}" if cache else ""))
