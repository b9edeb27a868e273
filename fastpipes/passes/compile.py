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

>>> fastpipes.accelerate(model, {"compile": {"mode": "max-autotune", "options": {"freezing": True}}})  # doctest: +SKIP
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import torch
import torch.nn as nn

from fastpipes.errors import FastpipesError, Problem, RecipeError
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

    def __init__(self, module: nn.Module, compiled, name: str, report, fallback_eager: bool):
        self.module, self.compiled, self.name = module, compiled, name
        self.report, self.fallback_eager = report, fallback_eager  # report kept to warn later
        self.failures = _compile_failures()
        self.first = True

    def __call__(self, *args, **kwargs):
        if not self.first:  # only reached with fallback eager: keep catching recompiles
            try:
                return self.compiled(*args, **kwargs)
            except self.failures as e:
                return self._fall_back(e, args, kwargs)
        t0 = time.perf_counter()
        try:
            out = self.compiled(*args, **kwargs)
        except self.failures as e:
            if not self.fallback_eager:
                raise
            return self._fall_back(e, args, kwargs)
        seconds = time.perf_counter() - t0
        self.module.__dict__[COMPILE_TIME_ATTR] = seconds
        self.report.extra.setdefault("compile_time_s", {})[self.name] = seconds
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


def _call_of(module: nn.Module):
    """The function torch.compile traces for `module`.

    Not ``module._call_impl`` itself (what ``nn.Module.compile()`` passes): in torch 2.13
    that frame and the forwards of torch.nn built-ins (``nn.Sequential``, ``nn.Linear``) are
    on Dynamo's skip list, so a built-in root compiles nothing at all. A frame of our own
    is traced and inlines the whole call, hooks included (as ``torch.compile(module)``
    does with its ``wrap_inline``).
    """

    def call(*args, **kwargs):
        return module._call_impl(*args, **kwargs)

    return call


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
    if "options" in kw:
        _check_options(ctx, kw["options"])
    ignored = cfg.backend is not CompileBackend.inductor and (
        cfg.options or cfg.mode is not CompileMode.default)
    for name, module in ctx.components("compile", cfg.components).items():
        # torch.compile pops keys from `options`: each component gets its own copy
        compiled = torch.compile(_call_of(module), **{**kw, **(
            {"options": dict(kw["options"])} if "options" in kw else {})})
        module._compiled_call_impl = FirstCall(module, compiled, name, ctx.report,
                                               cfg.fallback is CompileFallback.eager)
        shown = ", ".join(f"{k}={v}" for k, v in kw.items() if v not in (None, False))
        ctx.change(name, f"torch.compile({shown}), compiled lazily at the first call"
                   + (f"; mode/options ignored by backend {cfg.backend.value}" if ignored else ""))
