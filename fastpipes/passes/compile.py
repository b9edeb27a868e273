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

No process-wide Inductor or Dynamo config is changed outside a compiled call: per-compile
``options`` are scoped to this compiled call by torch itself, so an FP32 reference in the
same process is untouched. One exception is scoped here instead: ``freezing: true`` also
sets the global ``torch._inductor.config.freezing`` during each call of the compiled
component (Dynamo reads only the global flag; see :func:`_freezing_scope`).

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

import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import torch
import torch.nn as nn

from fastpipes.bounds import TYPE_WORDS, fits_type
from fastpipes.cache import inductor_location, open_part, part_dir
from fastpipes.errors import Problem
from fastpipes.hardware import import_ipex
from fastpipes.passes.base import PassContext, register_pass
from fastpipes.passes.compile_aot import PART as AOT_PART
from fastpipes.passes.compile_aot import aot_options, install
# compile_time_s is public API (docs/passes/compile.md) and stays importable from here
from fastpipes.passes.compile_runtime import (CompileCache, FirstCall,  # noqa: F401
                                              compile_time_s, inductor_cache_dir)
from fastpipes.recipe.schema import Section
from fastpipes.registry import did_you_mean



# Inductor options whose name and type are known here: recipes that set only these (e.g.
# freezing) are checked without importing Inductor, which an aot_inductor start never needs
BOOL_OPTIONS = {"freezing", "max_autotune", "epilogue_fusion", "coordinate_descent_tuning",
                "cpp.weight_prepack"}


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
    # ahead of time: an AOTInductor package per input shape, reloaded in milliseconds by the
    # next process (fastpipes/passes/compile_aot.py)
    aot_inductor = "aot_inductor"


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

    def __post_init__(self):
        # Inductor's option names are dotted (cpp.weight_prepack), so an override such as
        # compile.options.cpp.weight_prepack=true arrives as a nested mapping: flatten it
        object.__setattr__(self, "options", _flat_options(self.options))

    def preflight(self, target) -> list[Problem]:
        if self.backend is not CompileBackend.ipex:
            return []
        ipex, why = import_ipex()  # the 'ipex' dynamo backend exists only once IPEX imported
        return [] if ipex is not None else [target.problem(
            "compile.backend", f"backend 'ipex' is unavailable: {why}",
            "inductor (PyTorch's own compiler)")]

    def check(self) -> list[tuple[str, str, str]]:
        """Inductor option names and value types, at load time: torch would refuse a bad
        one only at the first compile, and passes some (e.g. ``freezing: maybe``) through."""
        return self._aot_problems() + self._option_problems()

    def _aot_problems(self) -> list[tuple[str, str, str]]:
        """What an ahead-of-time package cannot be: dynamic, CUDA-graphed, or frozen (its
        weights are the live module's, loaded at each start, never baked in)."""
        if self.backend is not CompileBackend.aot_inductor:
            return []
        out = []
        if self.dynamic:
            out.append(("dynamic", "backend aot_inductor compiles one static package per input "
                        "shape", "false or null"))
        if self.mode in (CompileMode.reduce_overhead,):
            out.append(("mode", "backend aot_inductor has no CUDA graphs", "default, max-autotune"))
        if self.options.get("freezing"):
            out.append(("options.freezing", "backend aot_inductor loads the live module's "
                        "weights into the package at each start; freezing would bake them in",
                        "false, or backend inductor"))
        return out

    def _option_problems(self) -> list[tuple[str, str, str]]:
        if all(k in BOOL_OPTIONS and isinstance(v, bool) for k, v in self.options.items()):
            return []  # checked without importing Inductor (seconds of a warm start)
        try:  # lazily: importing Inductor takes seconds
            from torch._inductor import config
        except OSError as e:  # it sets up its cache directory on import
            return [("options", f"cannot check Inductor options: importing Inductor failed: "
                                f"{e}", "fix TORCHINDUCTOR_CACHE_DIR or FASTPIPES_CACHE_DIR")]
        known = config.get_config_copy()
        out = []
        for key, value in self.options.items():
            name = str(key).replace("-", "_")  # as torch.compile reads option names
            if name not in known:
                out.append((f"options.{key}", f"unknown Inductor option{did_you_mean(name, known)}",
                            "names from torch._inductor.config, e.g. freezing, max_autotune"))
            elif not _fits(config.get_type(name), value):
                shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
                out.append((f"options.{key}", f"wrong type: {shown}",
                            _type_text(config.get_type(name))))
        return out


def _flat_options(options: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`options` with nested mappings as dotted names (``{"cpp": {"weight_prepack": True}}``
    -> ``{"cpp.weight_prepack": True}``); of two spellings of one name the later wins, as
    an override comes after the recipe it overrides."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flat_options(dict(value), f"{name}."))
        else:
            out[name] = value
    return out


def _fits(tp: Any, value: Any) -> bool:
    """Whether recipe data `value` suits Inductor option type `tp` (a class or a typing form).

    Plain classes as torch.compile checks them (``isinstance``; an int is no float), but a
    bool is no int; forms torch does not check are checked here as far as YAML data can
    match them (a Callable or a tuple never can).
    """
    origin = typing.get_origin(tp)
    if tp is Any or isinstance(tp, (str, typing.ForwardRef)):
        return True  # an unresolved annotation: nothing to check against
    if origin in (typing.Union, types.UnionType):
        return any(_fits(arg, value) for arg in typing.get_args(tp))
    if origin is typing.Literal:
        return any(type(value) is type(arg) and value == arg for arg in typing.get_args(tp))
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        return isinstance(value, list) and all(_fits(item, v) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if origin is not None or not isinstance(tp, type):
        return False  # Callable[...], tuple[...], Python objects: not expressible in YAML
    return fits_type(value, tp, int_is_float=False)


def _type_text(tp: Any) -> str:
    """An Inductor option type in words, for the `allowed` of a problem."""
    words = {**TYPE_WORDS, float: "number with a decimal point"}  # an int is no float here
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(_type_text(arg) for arg in typing.get_args(tp)))
    if origin is typing.Literal:
        return "one of: " + ", ".join(repr(arg) for arg in typing.get_args(tp))
    if origin in (list, dict):
        return "list" if origin is list else "mapping"
    return words.get(tp, "a Python object (not settable from a recipe)")


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


# whether the first frozen graph this process compiled had oneDNN weight prepacking: Inductor
# sets its freezing passes up once per process, with that compile's ``cpp.weight_prepack``,
# and every later frozen compile gets the same (measured: 16 packed Linear layers of tiny SAM
# under sam_bf16 compiled first, 0 under sam_bf16 after a weight_prepack: false recipe)
_FIRST_FROZEN: dict[str, bool] = {}


def _prepack(options: dict[str, Any]) -> bool:
    """The ``cpp.weight_prepack`` a compile with `options` asks for (Inductor's default: on)."""
    from torch._inductor import config

    return bool(options.get("cpp.weight_prepack", config.cpp.weight_prepack))


def _prepack_warning(options: dict[str, Any]) -> str | None:
    """Why a frozen compile with `options` will not get the weight prepacking it asks for."""
    first, asked = _FIRST_FROZEN.get("prepack"), _prepack(options)
    if first is None or first == asked:
        return None
    return (f"options.cpp.weight_prepack={str(asked).lower()} will not take effect: this process "
            f"already compiled a frozen graph with weight_prepack={str(first).lower()}, and "
            "Inductor sets its freezing passes up once per process; run this recipe in a new "
            "process (fastpipes bench runs each recipe in its own)")


def _freezing_scope(compiled, prepack: bool):
    """`compiled` with Inductor's process-wide ``freezing`` flag on during each call, and
    restored after it.

    ``torch.compile(options={"freezing": True})`` alone does not freeze in torch 2.13: Dynamo
    decides whether parameters become graph constants (``is_parameter_freezing()``) from the
    global ``torch._inductor.config.freezing`` while it traces, before the per-compile
    options reach Inductor, so the parameters stay graph inputs and nothing is folded or
    prepacked (measured on SAM vit_b: autocast weight casts in every call, plain ``addmm``
    instead of oneDNN's packed BF16 linear). Set around every call, not only the first, so a
    recompile (a new input shape) freezes too; the flag is read and written directly (a few
    microseconds) rather than through ``config.patch`` (tens, per call).
    """
    from torch._inductor import config

    def call(*args, **kwargs):
        _FIRST_FROZEN.setdefault("prepack", prepack)
        before = config.freezing
        config.freezing = True
        try:
            return compiled(*args, **kwargs)
        finally:
            config.freezing = before

    return call


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


@register_pass("compile", CompileConfig, "torch.compile of components (lazy, first call timed)")
def apply(ctx: PassContext, cfg: CompileConfig) -> None:
    if cfg.backend is CompileBackend.aot_inductor:
        return _apply_aot(ctx, cfg)
    kw = compile_kwargs(cfg)  # options were checked at load time (CompileConfig.check)
    ignored = cfg.backend is not CompileBackend.inductor and (
        cfg.options or cfg.mode is not CompileMode.default)
    components = ctx.components("compile", cfg.components)
    # only Inductor writes artifacts; eager/aot_eager/ipex have nothing to persist
    where = inductor_location(cfg.cache) if cfg.backend is CompileBackend.inductor else None
    for problem in where.warnings if where else ():
        ctx.warn(problem)
    # torch creates its cache directory while importing its compiler: keep a bad one unseen
    with inductor_cache_dir(where.inductor_dir if where and where.temporary else None):
        for name, module in components.items():
            # torch.compile pops keys from `options`: each component gets its own copy
            compiled = torch.compile(_call_of(module, name), **{**kw, **(
                {"options": dict(kw["options"])} if "options" in kw else {})})
            if kw.get("options", {}).get("freezing"):
                compiled = _freezing_scope(compiled, _prepack(kw["options"]))
                if why := _prepack_warning(kw["options"]):
                    ctx.warn(why)
            cache = (CompileCache.for_component(name, module, kw, where)
                     if where and (cfg.cache or where.temporary) else None)
            module._compiled_call_impl = FirstCall(module, compiled, name, ctx.report,
                                                   cfg.fallback is CompileFallback.eager, cache,
                                                   ctx.verbose)
            shown = ", ".join(f"{k}={v}" for k, v in kw.items() if v not in (None, False))
            ctx.change(name, f"torch.compile({shown}), compiled lazily at the first call"
                       + (f"; mode/options ignored by backend {cfg.backend.value}"
                          if ignored else "")
                       + (f"; compiled in the temporary {cache.where()} (see warnings)"
                          if cache and where.temporary else
                          f"; compiled artifacts cached in {cache.where()}" if cache else ""))


def _apply_aot(ctx: PassContext, cfg: CompileConfig) -> None:
    """backend aot_inductor: a package per component and input shape (compile_aot.py)."""
    options = aot_options(cfg.options, cfg.mode.value)
    if cfg.cache:
        open_part(AOT_PART)  # a cache that cannot be used or trusted fails here, not at a call
    for name, module in ctx.components("compile", cfg.components).items():
        install(module, name, ctx.recipe.raw, options, ctx.report,
                cfg.cache, cfg.fallback is CompileFallback.eager, ctx.verbose)
        ctx.change(name, "compiled ahead of time (AOTInductor) at its first call per input "
                   "shape" + (f"; packages cached in {part_dir(AOT_PART)}, reloaded by the next "
                              "process" if cfg.cache else "; not cached (cache: false)"))

