"""accelerate(): load -> validate -> pick adapter -> preflight -> apply all-or-nothing -> Report."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from fastpipes.apply import apply_recipe
from fastpipes.auto import accelerate_auto
from fastpipes.errors import ArgumentTypeError, InputError
from fastpipes.recipe.load import load_recipe
from fastpipes.recipe.schema import Recipe
from fastpipes.report import Report


def accelerate(
    pipe: Any,
    recipe: "str | Path | Recipe | Mapping[str, Any]",
    overrides: Iterable[str] | Mapping[str, Any] | str | None = None,
    strict: bool = False,
    example_inputs: Any = None,
    verbose: bool = True,
) -> Report:
    """Apply a recipe's passes to `pipe` in place and say what was done.

    `recipe` is a built-in name, a YAML path, a name found on FASTPIPES_RECIPE_PATH, a
    mapping or a loaded Recipe; `overrides` a dotlist such as ``["compile.mode=default"]``.
    All-or-nothing: if any pass fails, `pipe` is restored exactly and the error names the
    pass. With `strict`, a recipe whose ``requires`` this machine misses raises
    HardwareError instead of warning. `verbose` (the default) says on stderr what takes
    long: recipe="auto"'s trials, and each compiled component's first call (it compiles),
    with a line every 10 s while it lasts; ``verbose=False`` says nothing.

    ``recipe="auto"`` measures the candidate recipes on `pipe` with `example_inputs` (or,
    for SAM, SDXL and Llama pipelines, inputs the adapter makes from the model's shapes)
    and applies the fastest one that meets its precision class's fidelity bars; see
    fastpipes.auto.

    >>> import fastpipes, torch
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU())
    >>> report = fastpipes.accelerate(model, {"memory_format": {}})
    >>> report.applied
    ['memory_format']
    """
    for arg, value in (("strict", strict), ("verbose", verbose)):
        if not isinstance(value, bool):  # "no" is truthy: never guess what a string means
            raise ArgumentTypeError(f"accelerate({arg}=...) must be True or False, got "
                                    f"{value!r} ({type(value).__name__})")
    _check_arguments(overrides, example_inputs)
    if isinstance(recipe, str) and recipe == "auto":
        return accelerate_auto(pipe, overrides, strict, example_inputs, verbose=verbose)
    rec = load_recipe(recipe, overrides)  # validated before the model is touched
    report, snapshot = apply_recipe(pipe, rec, strict, verbose=verbose)
    snapshot.discard()  # applied for good: nothing to undo any more
    return report


def _check_arguments(overrides: Any, example_inputs: Any) -> None:
    """InputError for an argument of a type accelerate() cannot use, before anything is
    touched (the pipeline stays as it was)."""
    if overrides is not None and not isinstance(overrides, (str, Mapping)):
        items = list(overrides) if isinstance(overrides, (list, tuple)) else None
        if items is None or not all(isinstance(o, str) for o in items):
            raise InputError(
                f"overrides must be None, a 'key=value' string, a list or tuple of them "
                f"(e.g. ['compile.mode=default']) or a mapping {{'compile.mode': 'default'}}; "
                f"got {type(overrides).__name__} {overrides!r:.80}")
    if _no_tensor(example_inputs):
        raise InputError(
            "example_inputs must be what the pipeline is called with, holding at least one "
            "torch.Tensor: a tensor (called as pipe(x)), a tuple or list (pipe(*args)), a "
            f"dict (pipe(**kwargs)) or the adapter's own inputs; got "
            f"{type(example_inputs).__name__} {example_inputs!r:.80}")


def _no_tensor(obj: Any, depth: int = 0) -> bool:
    """True for inputs that cannot be a pipeline's call: text, numbers, and containers with
    no tensor anywhere. Other objects (an adapter's input dataclass) are the adapter's to
    judge. None: no inputs given."""
    if obj is None or isinstance(obj, torch.Tensor) or depth > 4:
        return False
    if isinstance(obj, (str, bytes, int, float, complex)):
        return True
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (list, tuple)):
        return not obj or all(_no_tensor(v, depth + 1) or v is None for v in obj)
    return False
