"""One preflight: everything knowable wrong about (recipe, pipeline, machine), found before
the pipeline is touched and reported at once.

It checks that the recipe's family fits the pipeline, that its passes do not conflict with
each other or with what an earlier accelerate() did, that every component a section names
exists, each section's own needs (``Section.preflight``: a backend that must import, a
device), and the recipe's hardware ``requires`` (a problem with ``strict``, else a warning).
Passes then only apply.

>>> problems, warnings = check(recipe, adapter, detect())   # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastpipes.errors import ConflictError, HardwareError, PreflightError, Problem
from fastpipes.hardware import unmet_requirements, wrong_device
from fastpipes.passes.order import conflicts, ordered
from fastpipes.recipe.schema import GENERIC, PrecisionClass, Recipe

if TYPE_CHECKING:
    from fastpipes.hardware import MachineInfo
    from fastpipes.passes.structure import PipelineStructure

# what accelerate() leaves on each component it changed the numerics of (a module
# attribute, so a failed accelerate's snapshot restore removes it again)
NUMERICS_MARK = "_fastpipes_numerics"


@dataclass
class Target:
    """What a recipe is about to be applied to; handed to each section's ``preflight``."""

    recipe: Recipe
    adapter: "PipelineStructure"
    hardware: "MachineInfo"

    def problem(self, key: str, message: str, allowed: str = "") -> Problem:
        return Problem(self.recipe.source, key, message, allowed)


def _components(target: Target, name: str, section: Any) -> list[Problem]:
    have = target.adapter.components()
    return [target.problem(f"{name}.components",
                           f"this {target.adapter.name} pipeline has no component {c!r}",
                           ", ".join(have) or "(none)")
            for c in getattr(section, "components", None) or [] if c not in have]


def _touched(target: Target, name: str, section: Any) -> list[str]:
    names = getattr(section, "components", None) or target.adapter.default_components(name)
    return [n for n in names if n in target.adapter.components()]


def _reaccelerated(target: Target) -> list[Problem]:
    """A pass that changes numerics, on a component whose numerics an earlier accelerate()
    already changed: casts and wrappers would stack (e.g. an fp16 cast, then bf16)."""
    out = []
    comps = target.adapter.components()
    for name in ordered(target.recipe):
        section = target.recipe.sections[name]
        if not section.enabled or section.numerics() is PrecisionClass.exact:
            continue
        for comp in _touched(target, name, section):
            before = comps[comp].__dict__.get(NUMERICS_MARK)
            if before:
                out.append(target.problem(
                    name, f"component {comp!r} was already accelerated with {before}; "
                          f"{name} ({section.numerics().value}) would stack on it",
                    "accelerate a fresh FP32 pipeline, or one recipe that combines both"))
    return out


def mark_numerics(adapter: "PipelineStructure", recipe: Recipe,
                  applied: list[str]) -> None:
    """Record, on each component, the numerics-changing passes just applied to it."""
    comps = adapter.components()
    target = Target(recipe, adapter, None)  # type: ignore[arg-type]
    for name in applied:
        section = recipe.sections[name]
        if section.numerics() is PrecisionClass.exact:
            continue
        for comp in _touched(target, name, section):
            marks = comps[comp].__dict__.get(NUMERICS_MARK) or ""
            comps[comp].__dict__[NUMERICS_MARK] = ", ".join(
                x for x in (marks, f"{recipe.name}: {name} {section.numerics().value}") if x)


@dataclass
class Preflight:
    """What the preflight found: problems by kind (each stops the recipe) and warnings."""

    recipe: Recipe
    conflicts: list[Problem] = field(default_factory=list)  # between passes / with before
    hardware: list[Problem] = field(default_factory=list)  # unmet `requires` (strict only)
    other: list[Problem] = field(default_factory=list)  # family, components, backends
    warnings: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[Problem]:
        return self.other + self.conflicts + self.hardware

    def raise_if_any(self) -> None:
        """One error listing every problem: HardwareError or ConflictError when all are of
        that kind, PreflightError otherwise."""
        if not self.problems:
            return
        kind = (HardwareError if self.problems == self.hardware else
                ConflictError if self.problems == self.conflicts else PreflightError)
        raise kind(self.problems, recipe=self.recipe.name)


def check(recipe: Recipe, adapter: "PipelineStructure", hardware: "MachineInfo",
          strict: bool = False) -> Preflight:
    """Everything that stops `recipe` on this pipeline and machine, and what to warn about."""
    target = Target(recipe, adapter, hardware)
    found = Preflight(recipe)
    if recipe.family not in (GENERIC, adapter.family):
        found.other.append(target.problem(
            "family", f"the recipe is for {recipe.family} pipelines, but this is a "
                      f"{adapter.family} pipeline ({adapter.name})",
            f"a {adapter.family} or generic recipe (fastpipes recipes list)"))
    found.conflicts += conflicts(recipe) + _reaccelerated(target)
    for name in ordered(recipe):
        section = recipe.sections[name]
        if section.enabled:
            found.other += _components(target, name, section)
            found.other += section.preflight(target) if hasattr(section, "preflight") else []
    device = str(adapter.device())
    for unmet in unmet_requirements(recipe.requires, hardware, device):
        if strict or unmet == wrong_device(recipe.requires, device, hardware):
            found.hardware.append(target.problem("requires", f"this machine lacks it: {unmet}"))
        else:
            found.warnings.append(f"requires: {unmet}")
    return found
