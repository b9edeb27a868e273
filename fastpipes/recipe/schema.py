"""Typed schema of a recipe.

A recipe is a YAML mapping with a few header keys and one section per pass::

    name: sam_fp32_fast            # header (RecipeHeader)
    family: sam
    requires: {native_bf16: false}
    attention: {backend: sdpa}     # a section, typed by the pass that registered it
    compile: {mode: max-autotune}

Sections are registered by the passes (and by non-pass features such as ``auto``) into
:data:`SECTIONS`, so the list of allowed keys lives in exactly one place.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from fastpipes.registry import Registry


class Family(str, Enum):
    """Which pipeline family a recipe is written for."""

    sam = "sam"
    sdxl = "sdxl"
    llama = "llama"
    any = "any"


class Device(str, Enum):
    """Where a recipe is meant to run."""

    any = "any"
    cpu = "cpu"
    cuda = "cuda"


@dataclass(frozen=True)
class Requires:
    """What a recipe needs from the machine to be worth running."""

    native_bf16: bool = False  # BF16 matmul in hardware (AMX / AVX512-BF16 / GPU)
    native_fp16: bool = False  # FP16 matmul in hardware (AMX-FP16 / AVX512-FP16 / GPU)
    device: Device = Device.any
    ipex: bool = False  # Intel Extension for PyTorch imports (torch 2.8.*; `make ipex-env`)


@dataclass(frozen=True)
class RecipeHeader:
    """The keys every recipe may carry besides its pass sections."""

    name: str = ""
    description: str = ""
    family: Family = Family.any
    base: str | None = None  # a built-in recipe name or a path relative to this file
    requires: Requires = field(default_factory=Requires)


@dataclass(frozen=True)
class Section:
    """Base of every recipe section. ``enabled: false`` keeps a section but skips it."""

    enabled: bool = True

    def check(self) -> list[tuple[str, str, str]]:
        """Cross-field problems as (key, message, allowed); empty when fine."""
        return []


SECTIONS: Registry[type[Section]] = Registry("recipe section")

HEADER_KEYS = ("name", "description", "family", "base", "requires")


@dataclass(frozen=True)
class Recipe:
    """A loaded, validated recipe: the header plus the sections it sets.

    ``sections`` holds only the sections the recipe (or its bases) names, in file order.
    """

    name: str
    description: str = ""
    family: Family = Family.any
    requires: Requires = field(default_factory=Requires)
    sections: dict[str, Section] = field(default_factory=dict)
    source: str = "<api>"  # the file it was loaded from
    chain: tuple[str, ...] = ()  # the inheritance chain, leaf first
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def section(self, name: str) -> Section | None:
        """The section `name` if the recipe sets it and it is enabled, else None."""
        sec = self.sections.get(name)
        return sec if sec is not None and sec.enabled else None

    def to_yaml(self) -> str:
        """The fully resolved recipe as YAML (what ``fastpipes recipes show`` prints)."""
        from omegaconf import OmegaConf

        return OmegaConf.to_yaml(OmegaConf.create(self.raw))
