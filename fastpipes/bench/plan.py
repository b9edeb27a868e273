"""Which configurations a benchmark runs: the FP32 eager baseline, then the recipes, each
validated (loaded, family checked, hardware noted) before anything is built."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from fastpipes.bench.result import BASELINE
from fastpipes.errors import FastpipesError
from fastpipes.hardware import detect, unmet_requirements, wrong_device
from fastpipes.recipe.load import available, load_recipe
from fastpipes.family import with_hook
from fastpipes.recipe.schema import FAMILY_WORKLOADS, GENERIC

AUTO = "auto"  # --recipes auto: accelerate(pipe, "auto") searched inside the worker


@dataclass
class Planned:
    """A configuration the parent decided on; `recipe` is the validated, resolved mapping."""

    name: str
    recipe: dict | str | None = None  # None: the FP32 eager baseline; "auto"
    source: str | None = None
    run: bool = True
    reason: str = ""  # why it is not run, or failed before running
    hardware_note: str = ""
    failed: bool = False  # could not even be loaded
    baseline: bool = False
    precision_class: str | None = None  # declared by the recipe (the row shows the applied one)


def _recipe_family(command: str) -> str:
    """The family whose recipes fit `command`'s benchmark ("toy": generic)."""
    families = with_hook("bench")
    return families[command].name if command in families else command


def _family_matches(recipe_family: str, family: str) -> bool:
    """Whether a recipe of `recipe_family` is one of `family`'s built-in candidates: its own
    family's (the toy benchmark's own are the generic recipes)."""
    return recipe_family == _recipe_family(family)


def _plan_one(spec: Any, family: str, overrides: list[str], info: Any, device: str,
              named: bool) -> Planned:
    if spec == AUTO:
        return Planned(AUTO, recipe=AUTO, source="recipe='auto': the fastest candidate that "
                                                 "meets its precision class's fidelity bars")
    label = spec.get("name", "custom") if isinstance(spec, Mapping) else Path(str(spec)).stem
    try:
        rec = load_recipe(spec, overrides)
    except FastpipesError as e:
        return Planned(label, source=str(spec) if not isinstance(spec, Mapping) else "<api>",
                       run=False, failed=True, reason=f"cannot load recipe: {e}")
    if rec.family not in (GENERIC, _recipe_family(family)):
        return Planned(rec.name, source=rec.source, run=False, failed=True,
                       reason=f"recipe {rec.name!r} is for {rec.family} pipelines, not "
                              f"{family}")
    unmet = unmet_requirements(rec.requires, info, device)
    note = "; ".join(unmet)
    planned = Planned(rec.name, recipe=rec.raw, source=rec.source, hardware_note=note,
                      precision_class=rec.precision_class.value)
    if why := wrong_device(rec.requires, device, info):  # never runs, named or not
        planned.run = False
        planned.reason = f"not run: {why}"
    elif unmet and not named:
        planned.run = False
        planned.reason = f"not run: {note} (name it in --recipes or pass --all to run it)"
    return planned


def _other_workload(recipe_workload: str | None, family: str, workload: str | None) -> str:
    """The workload a recipe is made for when it is not the benchmark's `workload` (both
    default to the family's first), else ""."""
    family = _recipe_family(family)
    known = FAMILY_WORKLOADS.get(family) if family in FAMILY_WORKLOADS else ()
    default = known[0] if known else None
    made_for = recipe_workload or default
    return made_for if made_for != (workload or default) else ""


def plan(family: str, recipes: Iterable[Any] | None, overrides: Iterable[str] = (),
         run_all: bool = False, info: Any = None, device: str = "cpu",
         baseline: bool = True, workload: str | None = None) -> list[Planned]:
    """The baseline plus the recipes to run, in order (the baseline row stays, marked not
    run, when `baseline` is False).

    Named recipes always run (marked when this machine misses their ``requires``). With no
    names: every built-in recipe of `family`; those whose ``requires`` are unmet, and those
    made for another benchmark `workload` than this one (a recipe's ``workload:``, e.g. SAM's
    click recipes), are listed as not run unless `run_all`.
    """
    info = info or detect()
    overrides = list(overrides)
    out = [Planned(BASELINE, baseline=True, precision_class="exact") if baseline else Planned(
        BASELINE, baseline=True, run=False,
        reason="not run (--no-baseline): no speedup or fidelity for the other rows")]
    if recipes:
        out += [_plan_one(r, family, overrides, info, device, named=True) for r in recipes]
    else:
        for name, path in sorted(available().items()):
            try:
                rec = load_recipe(path)
            except FastpipesError:
                continue  # a broken unrelated recipe must not stop this benchmark
            if not _family_matches(rec.family, family):
                continue
            planned = _plan_one(str(path), family, overrides, info, device, named=run_all)
            other = _other_workload(rec.workload, family, workload)
            if other and planned.run and not run_all:
                planned.run = False
                planned.reason = (f"not run: made for --workload {other} (name it in --recipes "
                                  "or pass --all to run it)")
            out.append(planned)
    seen: dict[str, int] = {}
    for p in out:  # one recipe twice (e.g. a YAML and its copy) must stay two rows
        seen[p.name] = seen.get(p.name, 0) + 1
        if seen[p.name] > 1:
            p.name = f"{p.name}#{seen[p.name]}"
    return out


def compiles(recipe: dict | str | None) -> bool:
    """Whether a second start can be faster: the recipe compiles (a compile section, or a
    compiled decode step), converts to OpenVINO with its cache (the second start reads the
    converted model), or is auto."""
    if recipe == AUTO:
        return True
    if not isinstance(recipe, Mapping):
        return False
    compile_ = recipe.get("compile")
    kv = recipe.get("kv_cache") or {}
    ov = recipe.get("openvino")
    return ((isinstance(compile_, Mapping) and compile_.get("enabled", True))
            or bool(kv.get("enabled", True) and kv.get("compile_decode"))
            or (isinstance(ov, Mapping) and bool(ov.get("enabled", True) and ov.get("cache", True))))
