"""Ablations of a recipe: the recipe with one pass dropped, or one pass alone.

``fastpipes bench FAMILY --ablate RECIPE`` runs them beside the recipe and FP32 eager, so a
pass that costs time on this machine shows at once; recipe="auto" tries the drop-one
variants of its winner. A variant is named from its recipe (``"sam_bf16 without compile"``,
``"sam_bf16 compile only"``) and rebuilt from that name, so a cached decision can name one.

>>> [v["name"] for v in ablations(load_recipe("sam_fp32_fast"))]   # doctest: +SKIP
['sam_fp32_fast without attention', 'sam_fp32_fast without compile',
 'sam_fp32_fast attention only', 'sam_fp32_fast compile only']
"""
from __future__ import annotations

import re
from typing import Any

from fastpipes.recipe.load import load_recipe
from fastpipes.recipe.schema import HEADER_KEYS, Recipe

NOT_PASSES = ("auto",)  # sections that configure fastpipes itself, not the pipeline
_DROP = re.compile(r"^(?P<recipe>\S+) without (?P<section>\w+)$")
_ALONE = re.compile(r"^(?P<recipe>\S+) (?P<section>\w+) only$")


def passes_of(recipe: Recipe) -> list[str]:
    return [n for n, s in recipe.sections.items() if s.enabled and n not in NOT_PASSES]


def _header(recipe: Recipe) -> dict[str, Any]:
    return {k: v for k, v in recipe.raw.items() if k in HEADER_KEYS and k not in ("name", "base")}


def without(recipe: Recipe, section: str) -> dict[str, Any]:
    """The resolved recipe with `section` dropped."""
    data = {k: v for k, v in recipe.raw.items() if k not in (section, "base")}
    return {**data, "name": f"{recipe.name} without {section}"}


def alone(recipe: Recipe, section: str) -> dict[str, Any]:
    """Only `section` of the resolved recipe (with its header: family, requires)."""
    return {**_header(recipe), "name": f"{recipe.name} {section} only",
            section: recipe.raw[section]}


def ablations(recipe: Recipe, with_alone: bool = True) -> list[dict[str, Any]]:
    """Each pass dropped in turn, then (with `with_alone`) each pass alone; nothing for a
    one-pass recipe (its ablations are FP32 eager and itself)."""
    names = passes_of(recipe)
    if len(names) < 2:
        return []
    out = [without(recipe, n) for n in names]
    return out + ([alone(recipe, n) for n in names] if with_alone else [])


def parse(name: str) -> tuple[str, str, str] | None:
    """("without" | "only", recipe spec, section) for an ablation's name, else None."""
    for kind, pattern in (("without", _DROP), ("only", _ALONE)):
        m = pattern.match(name)
        if m:
            return kind, m["recipe"], m["section"]
    return None


def rebuild(name: str) -> dict[str, Any] | None:
    """The recipe mapping an ablation's name stands for (None if `name` is not one)."""
    found = parse(name)
    if found is None:
        return None
    kind, spec, section = found
    recipe = load_recipe(spec)
    if section not in passes_of(recipe):
        return None
    return without(recipe, section) if kind == "without" else alone(recipe, section)
