"""accelerate(): load -> validate -> pick adapter -> preflight -> apply all-or-nothing -> Report."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

from fastpipes.apply import apply_recipe
from fastpipes.auto import accelerate_auto
from fastpipes.errors import ArgumentTypeError
from fastpipes.recipe.load import load_recipe
from fastpipes.recipe.schema import Recipe
from fastpipes.report import Report


def accelerate(
    pipe: Any,
    recipe: "str | Path | Recipe | Mapping[str, Any]",
    overrides: Iterable[str] | Mapping[str, Any] | str | None = None,
    strict: bool = False,
    example_inputs: Any = None,
) -> Report:
    """Apply a recipe's passes to `pipe` in place and say what was done.

    `recipe` is a built-in name, a YAML path, a name found on FASTPIPES_RECIPE_PATH, a
    mapping or a loaded Recipe; `overrides` a dotlist such as ``["compile.mode=default"]``.
    All-or-nothing: if any pass fails, `pipe` is restored exactly and the error names the
    pass. With `strict`, a recipe whose ``requires`` this machine misses raises
    HardwareError instead of warning.

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
    if not isinstance(strict, bool):  # "no" is truthy: never guess what a string means
        raise ArgumentTypeError(f"accelerate(strict=...) must be True or False, got "
                                f"{strict!r} ({type(strict).__name__})")
    if isinstance(recipe, str) and recipe == "auto":
        return accelerate_auto(pipe, overrides, strict, example_inputs)
    rec = load_recipe(recipe, overrides)  # validated before the model is touched
    report, snapshot = apply_recipe(pipe, rec, strict)
    snapshot.discard()  # applied for good: nothing to undo any more
    return report
