"""accelerate(): load -> validate -> pick adapter -> order -> apply all-or-nothing -> Report."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

from fastpipes.errors import FastpipesError, HardwareError, PassError
from fastpipes.hardware import detect, unmet_requirements
from fastpipes.passes.base import PASSES, PassContext, SkipPass
from fastpipes.passes.order import check_conflicts, ordered
from fastpipes.pipelines.base import Adapter, find_adapter
from fastpipes.recipe.load import load_recipe
from fastpipes.recipe.schema import Family, Recipe
from fastpipes.report import Report
from fastpipes.snapshot import Snapshot


def accelerate(
    pipe: Any,
    recipe: "str | Path | Recipe | Mapping[str, Any]",
    overrides: Iterable[str] | Mapping[str, Any] | None = None,
    strict: bool = False,
    example_inputs: Any = None,
) -> Report:
    """Apply a recipe's passes to `pipe` in place and say what was done.

    `recipe` is a built-in name, a YAML path, a name found on FASTPIPES_RECIPE_PATH, a
    mapping or a loaded Recipe; `overrides` a dotlist such as ``["compile.mode=default"]``.
    All-or-nothing: if any pass fails, `pipe` is restored exactly and the error names the
    pass. With `strict`, a recipe whose ``requires`` this machine misses raises
    HardwareError instead of warning.

    ``recipe="auto"`` measures the candidate recipes on `pipe` with `example_inputs` (or the
    adapter's default inputs) and applies the fastest faithful one; see fastpipes.auto.

    >>> import fastpipes, torch
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU())
    >>> report = fastpipes.accelerate(model, {"memory_format": {}})
    >>> report.applied
    ['memory_format']
    """
    if isinstance(recipe, str) and recipe == "auto":
        from fastpipes.auto import accelerate_auto

        return accelerate_auto(pipe, overrides, strict, example_inputs)
    rec = load_recipe(recipe, overrides)  # validated before the model is touched
    report, _ = apply_recipe(pipe, rec, strict)
    return report


def apply_recipe(pipe: Any, rec: Recipe, strict: bool = False,
                 adapter: Adapter | None = None) -> tuple[Report, Snapshot]:
    """Apply a loaded recipe; return the Report and the Snapshot that undoes it."""
    adapter = adapter or find_adapter(pipe)
    if rec.family not in (Family.any, adapter.family):
        raise FastpipesError(
            f"recipe {rec.name!r} is for {rec.family.value} pipelines, but this is a "
            f"{adapter.family.value} pipeline ({adapter.name}); pick a {adapter.family.value} "
            "or family 'any' recipe (fastpipes recipes list)")
    check_conflicts(rec)
    report = Report(recipe=rec.name, family=adapter.family.value, adapter=adapter.name,
                    components=list(adapter.components()))
    hw = detect()
    device = str(adapter.device())
    for unmet in unmet_requirements(rec.requires, hw, device):
        if strict:
            raise HardwareError(f"recipe {rec.name!r} requires what this machine lacks: {unmet}")
        report.warnings.append(f"requires: {unmet}")

    snapshot = Snapshot(adapter.components().values(), adapter.state_objects())
    ctx = PassContext(pipe=pipe, adapter=adapter, hardware=hw, recipe=rec, report=report,
                      strict=strict)
    current = ""
    try:
        for name in ordered(rec):
            current = name
            section = rec.sections[name]
            entry = report.record(name)
            if not section.enabled:
                entry.status, entry.reason = "skipped", "enabled: false in the recipe"
                continue
            ctx.pass_name = name
            try:
                PASSES.get(name).apply(ctx, section)
            except SkipPass as skip:
                entry.status, entry.reason = "skipped", str(skip)
    except FastpipesError:
        snapshot.restore()  # a user-facing error (bad component name, missing package)
        raise
    except Exception as e:
        snapshot.restore()
        raise PassError(current, f"{type(e).__name__}: {e}") from e
    return report, snapshot
