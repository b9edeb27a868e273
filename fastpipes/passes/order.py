"""The one place that knows in which order passes run and which combinations conflict."""
from __future__ import annotations

from typing import Callable

from fastpipes.errors import Problem
from fastpipes.passes.base import PASSES
from fastpipes.recipe.schema import Recipe

# Why this order:
#  - ipex first: it rewrites modules wholesale; later passes see its result.
#  - attention, fuse_qkv: change module structure while weights are still FP32 Linear.
#  - quantize before precision: it reads FP32 weights and packs them; a later cast then
#    leaves the packed int weights alone.
#  - precision before memory_format: a dtype cast would otherwise re-lay out tensors.
#  - prepack after precision and quantize: it packs the Linear layers they left as
#    nn.Linear (quantized layers are other types), and compile then traces the packed ones.
#  - kv_cache (static cache for generate) just before compile: shapes become static.
#  - compile last: it must trace the final modules.
#  - openvino after all: it converts FP32 components no other pass may touch (its preflight
#    refuses overlaps), so its place only keeps it out of the others' way.
PASS_ORDER: tuple[str, ...] = (
    "ipex", "attention", "fuse_qkv", "quantize", "precision", "memory_format", "prepack",
    "kv_cache", "compile", "openvino",
)


def _get(recipe: Recipe, section: str, key: str, default=None):
    sec = recipe.section(section)
    value = getattr(sec, key, default) if sec is not None else default
    return getattr(value, "value", value)


def _python_custom_ops(r: Recipe) -> str:
    users = [what for what, used in (
        ("attention.backend native", _get(r, "attention", "backend") == "native"),
        ("prepack", r.section("prepack") is not None)) if used]
    if _get(r, "compile", "backend") != "aot_inductor" or not users:
        return ""
    return (f"{' and '.join(users)} call fastpipes' Python custom ops, which an AOTInductor "
            "package cannot call: use compile.backend inductor with them")


# (description, predicate on the recipe -> message or "")
CONFLICTS: list[tuple[str, Callable[[Recipe], str]]] = [
    ("ipex with torch.compile uses the ipex backend",
     lambda r: "ipex and compile.backend=ipex need the ipex pass enabled"
     if _get(r, "compile", "backend") == "ipex" and r.section("ipex") is None else ""),
    ("aot_inductor cannot call Python custom ops", _python_custom_ops),
]


def ordered(recipe: Recipe) -> list[str]:
    """The recipe's pass sections (enabled or not) in the order they must run."""
    names = [n for n in recipe.sections if n in PASSES]
    for n in names:
        assert n in PASS_ORDER, f"pass {n!r} is registered but has no place in PASS_ORDER"
    return sorted(names, key=PASS_ORDER.index)


def conflicts(recipe: Recipe) -> list[Problem]:
    """One Problem per conflicting combination of passes in the recipe."""
    return [Problem(recipe.source, "", msg) for _, rule in CONFLICTS if (msg := rule(recipe))]
