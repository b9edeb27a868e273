"""``compile.backend: aot_inductor``: a component compiled ahead of time into an AOTInductor
package, so a later process loads it in milliseconds instead of tracing and compiling again.

At a component's first call with a new input signature (tensor shapes and dtypes, plain
values), the component as the recipe left it (autocast, replaced attention, cast weights) is
exported with ``torch.export`` and compiled by ``torch._inductor.aoti_compile_and_package``;
the package holds code only: its weights are the live module's, handed over with
``load_constants(user_managed=True)`` (no copy, and another checkpoint of the same model needs
no new package). Packages persist in the ``aoti/`` cache part, keyed by what decides the
compiled code: the component's structure and plain attributes, the resolved recipe, the input
signature, fastpipes, torch and the machine; a package is native code, so it is loaded only
from a cache that is yours and closed to others, and only if its SHA-256 matches the one
written beside it.

A call with another input signature gets its own package (shapes are static); ``dynamic`` and
Inductor's ``freezing`` are refused when the recipe loads (freezing would bake the weights
into the package).
"""
from __future__ import annotations

import hashlib
import json
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.utils._pytree as pytree

from fastpipes._version import __version__
from fastpipes.cache import open_part, trusted_file
from fastpipes.errors import CacheError, FastpipesError
from fastpipes.files import atomic_file, atomic_write
from fastpipes.fingerprint import machine_fingerprint, shapes, structure_signature
from fastpipes.hardware import detect
from fastpipes.passes.compile_runtime import COMPILE_TIME_ATTR
from fastpipes.progress import heartbeat

PART = "aoti"
FOLDED = "_FOLDED_CONST_"
_PLAIN = (bool, int, float, str, type(None))


def _plain_attributes(module: nn.Module) -> list:
    """Each submodule's plain attributes (eps, window sizes, flags): hyperparameters that
    shape the compiled code but no parameter shape shows."""
    out = []
    for name, m in module.named_modules():
        attrs = {k: v for k, v in vars(m).items() if not k.startswith("_") and (
            isinstance(v, _PLAIN) or (isinstance(v, tuple) and all(isinstance(x, _PLAIN) for x in v)))}
        out.append([name, sorted((k, repr(v)) for k, v in attrs.items())])
    return out


def signature(args: tuple, kwargs: dict) -> str:
    """The input signature a package is specialized to: tensor shapes/dtypes, plain values."""
    return json.dumps(shapes({"args": list(args), "kwargs": kwargs}), sort_keys=True,
                      default=str)


def package_key(name: str, module: nn.Module, recipe: dict, options: dict, sig: str) -> str:
    payload = {"component": name, "model": structure_signature({name: module}),
               "attributes": _plain_attributes(module), "recipe": recipe, "options": options,
               "inputs": sig, "fastpipes": __version__, **machine_fingerprint(detect())}
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return f"{name.replace('.', '_')}-{hashlib.sha256(blob).hexdigest()[:24]}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Package:
    """A loaded package, called with the flat-tensor protocol directly: its input and output
    tree specs are parsed once here, not on every call (AOTICompiledModel re-parses them per
    call, which a SAM click would pay)."""

    def __init__(self, path: Path, module: nn.Module):
        # torch's own loader class, as torch._inductor.aoti_load_package makes it, without
        # importing Inductor and Dynamo (seconds of a fresh process's start)
        loader = torch._C._aoti.AOTIModelPackageLoader(str(path), "model", False, 1, -1)
        live = dict(module.named_parameters(remove_duplicate=False))
        live.update(module.named_buffers(remove_duplicate=False))
        # _FOLDED_CONST_*: what Inductor folds from the weights (a transposed weight, a
        # fused bias), recomputed from the loaded ones at run time (see aot_options)
        wanted = [f for f in loader.get_constant_fqns() if not f.startswith(FOLDED)]
        missing = [f for f in wanted if f not in live]
        if missing:
            raise FastpipesError(f"the package at {path} needs constants the module does not have: "
                            f"{', '.join(missing[:5])}")
        # (constants, use_inactive, check_full_update, user_managed): no copy of the weights
        loader.load_constants({f: live[f] for f in wanted}, False, False, True)
        self.loader = loader
        in_spec, out_spec = loader.get_call_spec()
        self.in_spec = pytree.treespec_loads(in_spec)
        self.out_spec = pytree.treespec_loads(out_spec)

    def __call__(self, args: tuple, kwargs: dict) -> Any:
        flat = [x for x in pytree.tree_leaves((args, kwargs)) if isinstance(x, torch.Tensor)]
        return pytree.tree_unflatten(self.loader.boxed_run(flat), self.out_spec)


class AotCall:
    """Installed as ``module._compiled_call_impl`` by the compile pass: one package per input
    signature, loaded from the cache or compiled at its first call (timed and reported)."""

    def __init__(self, module: nn.Module, name: str, recipe: dict, options: dict, report,
                 cache: bool, fallback_eager: bool, verbose: bool = True):
        self.module, self.name, self.recipe, self.options = module, name, recipe, options
        self.report, self.cache, self.fallback_eager = report, cache, fallback_eager
        self.verbose = verbose
        self.packages: dict[str, Package] = {}
        self.eager = False

    def __call__(self, *args, **kwargs):
        if self.eager:
            return self.module._call_impl(*args, **kwargs)
        sig = signature(args, kwargs)
        package = self.packages.get(sig)
        if package is None:
            package = self._first_call(sig, args, kwargs)
            if package is None:  # fell back to eager
                return self.module._call_impl(*args, **kwargs)
        return package(args, kwargs)

    def _first_call(self, sig: str, args: tuple, kwargs: dict) -> Package | None:
        t0 = time.perf_counter()
        key = package_key(self.name, self.module, self.recipe, self.options, sig)
        try:
            package, how = self._package(key, args, kwargs)
        except FastpipesError:  # the cache, hooks, constants: said plainly
            raise
        except Exception as e:  # noqa: BLE001  (export / Inductor failures: many types)
            if not self.fallback_eager:
                raise FastpipesError(f"compile: {self.name}: ahead-of-time compile failed: "
                                f"{type(e).__name__}: {str(e).splitlines()[0][:300]}") from e
            self.eager = True
            self.report.warnings.append(
                f"compile: {self.name}: ahead-of-time compile failed, running eager instead "
                f"(fallback: eager): {type(e).__name__}: {str(e).splitlines()[0][:300]}")
            return None
        self.packages[sig] = package
        seconds = time.perf_counter() - t0
        self.module.__dict__.setdefault(COMPILE_TIME_ATTR, seconds)
        self.report.extra.setdefault("compile_time_s", {}).setdefault(self.name, seconds)
        self.report.extra.setdefault("compile_cache", {})[self.name] = {"package": how}
        return package

    def _package(self, key: str, args: tuple, kwargs: dict) -> tuple[Package, str]:
        """(the loaded package, where it came from)."""
        if not self.cache:
            with tempfile.TemporaryDirectory(prefix="fastpipes-aoti-") as tmp:
                path = self._compile(Path(tmp) / f"{key}.pt2", args, kwargs)
                return Package(path, self.module), "compiled (compile.cache: false)"
        part = open_part(PART)
        path, digest = part / f"{key}.pt2", part / f"{key}.json"
        if path.exists():
            why = self._unusable(path, digest)
            if not why:
                return Package(path, self.module), f"loaded {path}"
            self.report.warnings.append(f"compile: {self.name}: ignoring {path} ({why}); "
                                        "compiling it again")
        sums = {}

        def compile_into(tmp: Path) -> None:
            self._compile(tmp, args, kwargs)
            sums.update(sha256=_sha256(tmp), component=self.name)

        atomic_file(path, compile_into, mode=0o600, suffix=".pt2")  # torch wants .pt2
        # written last: a package without it is never loaded
        atomic_write(digest, json.dumps(sums), mode=0o600)
        return Package(path, self.module), f"compiled into {path}"

    @staticmethod
    def _unusable(path: Path, digest: Path) -> str:
        try:
            trusted_file(path)
            recorded = json.loads(digest.read_text())["sha256"]
        except CacheError as e:
            return str(e)
        except (OSError, ValueError, KeyError, TypeError) as e:
            return f"its checksum file {digest.name} is missing or unreadable: {e}"
        return "" if _sha256(path) == recorded else "its SHA-256 does not match the one recorded"

    def _compile(self, path: Path, args: tuple, kwargs: dict) -> Path:
        what = f"{self.name}: compiling ahead of time for {_described(args, kwargs)}"
        with heartbeat("compile", what, enabled=self.verbose, announce=f"{what} (once per "
                       "model, recipe, input shape and machine; this takes a while)"):
            return self._export_and_compile(path, args, kwargs)

    def _export_and_compile(self, path: Path, args: tuple, kwargs: dict) -> Path:
        if self.module._forward_pre_hooks or self.module._forward_hooks:
            raise FastpipesError(f"compile: {self.name}: backend aot_inductor exports the module's "
                            "forward only, and this component has forward hooks (e.g. "
                            "memory_format.convert_inputs): use backend inductor for it")
        impl, self.module._compiled_call_impl = self.module._compiled_call_impl, None
        try:
            with torch.no_grad():
                program = torch.export.export(self.module, args, kwargs)
        finally:
            self.module._compiled_call_impl = impl
        with warnings.catch_warnings():  # torch's own pytree deprecation, not the user's
            warnings.filterwarnings("ignore", message=".*LeafSpec", category=FutureWarning)
            # a copy: torch adds its own keys to the dict it is given, and these options
            # are part of every later package key (shared by the components of one recipe)
            torch._inductor.aoti_compile_and_package(program, package_path=str(path),
                                                     inductor_configs=dict(self.options))
        return path


def _described(args: tuple, kwargs: dict) -> str:
    """'1x3x1024x1024 float32, multimask_output=True': an input signature for people."""
    def one(value: Any) -> str:
        if isinstance(value, torch.Tensor):
            return "x".join(map(str, value.shape)) + " " + str(value.dtype).replace("torch.", "")
        return repr(value) if isinstance(value, (int, float, str, bool, type(None))) \
            else type(value).__name__
    return ", ".join([one(a) for a in args] + [f"{k}={one(v)}" for k, v in kwargs.items()])


def aot_options(options: dict[str, Any], mode: str) -> dict[str, Any]:
    """Inductor configs for the package: the recipe's options, the mode's autotuning, and
    weights left out of the package (they are the live module's). Constants Inductor folds
    from weights are folded at run time, from the weights loaded: folded at compile time they
    would be the compiling model's, baked in (measured: another model's outputs)."""
    out = {str(k).replace("-", "_"): v for k, v in options.items()}
    if mode in ("max-autotune", "max-autotune-no-cudagraphs"):
        out["max_autotune"] = True
    out["aot_inductor.package_constants_in_so"] = False
    out["aot_inductor.use_runtime_constant_folding"] = True
    return out


def install(module: nn.Module, name: str, recipe: dict, options: dict, report,
            cache: bool, fallback_eager: bool, verbose: bool = True) -> Callable:
    call = AotCall(module, name, recipe, options, report, cache, fallback_eager, verbose)
    module._compiled_call_impl = call
    return call
