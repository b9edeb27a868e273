"""One description per model family: what the rest of fastpipes needs to know about it.

Each family folder (``fastpipes/sam``, ``sdxl``, ``llama``, ``generic``) states its
:class:`FamilyDescription` in its ``__init__.py`` as ``FAMILY``, and :mod:`fastpipes.families`
registers them, in order, with one line each. From the registry come the families a recipe may
name (``family:``), the adapters :func:`~fastpipes.pipelines.base.find_adapter` tries, and the
sub-commands of ``fastpipes bench`` and ``fastpipes run`` with their typed options.

The bench workload and the run job sit in the engines' layers above this one (they subclass
``bench/workloads/base.Workload`` and ``run/base.Job``), so a description names them by a
``"module:attribute"`` string that the engine resolves when it needs them (:func:`resolve`).

>>> from fastpipes.family import FAMILIES, BuildSpec
>>> toy = FAMILIES.get("generic").build(BuildSpec(size="tiny", device="meta"))
>>> next(toy.parameters()).device.type
'meta'
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from fastpipes.errors import FastpipesError
from fastpipes.pipelines.base import Adapter, register_adapter
from fastpipes.recipe.schema import FAMILY_COMPONENTS, FAMILY_WORKLOADS
from fastpipes.registry import Registry


@dataclass(frozen=True)
class BuildSpec:
    """What a family's builder is asked for: every FP32 pipeline fastpipes builds (a benchmark
    configuration, a run job, the meta-device tests) goes through ``FamilyDescription.build``."""

    model: str | None = None  # a family model name (vit_b, llama-3.2-1b) or a local path
    size: str = "full"  # tiny | small | full: the family's shapes when `model` is None
    seed: int = 0  # random weights are drawn from it (same weights for the same seed)
    device: str = "cpu"  # where the weights are made and stay (meta: no memory)
    dtype: str = "float32"  # anything else cannot be a benchmark's FP32 baseline
    checkpoint: str | None = None  # a weights file for `model` (SAM's .pth)
    quantize: Any = None  # a recipe's quantize section, for families that load quantized


@dataclass(frozen=True)
class FamilyDescription:
    """A model family, as one registered value (see docs/adding-a-family.md)."""

    name: str  # what recipes name (``family: sam``); the adapter's ``family``
    help: str  # one line, shown by ``fastpipes bench --help`` and ``fastpipes run --help``
    build: Callable[[BuildSpec], Any]  # the one place a pipeline is built and put on a device
    adapter: type[Adapter]  # describes a built pipeline (components, attention, fidelity bars)
    # the component names recipes of this family may name; None: any (generic recipes)
    components: tuple[str, ...] | None
    bench: str | None = None  # "module:Class" of its Workload (fastpipes/<name>/bench.py)
    run: str | None = None  # "module:Class" of its run Job (fastpipes/<name>/run.py)
    command: str = ""  # its sub-command of bench / run when not `name` (generic: "toy")
    # its benchmark's workloads (``--workload``), the default first; recipes name the one
    # they are made for (``workload:``); empty: one workload, no option
    workloads: tuple[str, ...] = ()

    @property
    def cli_name(self) -> str:
        return self.command or self.name


FAMILIES: Registry[FamilyDescription] = Registry("pipeline family", filled_by="fastpipes.families")


def register_family(family: FamilyDescription) -> FamilyDescription:
    """Register `family`: its name for recipes, its adapter for find_adapter, and itself."""
    assert family.adapter.family == family.name, \
        f"{family.adapter.__name__}.family is {family.adapter.family!r}, not {family.name!r}"
    FAMILIES.add(family.name, family)
    FAMILY_COMPONENTS.add(family.name, family.components)
    FAMILY_WORKLOADS.add(family.name, family.workloads)
    register_adapter(family.adapter)
    return family


def with_hook(hook: str) -> dict[str, FamilyDescription]:
    """Sub-command name -> family, for the registered families that have `hook` ("bench" or
    "run"), in registration order."""
    return {f.cli_name: f for _, f in FAMILIES.items() if getattr(f, hook)}


def resolve(family: FamilyDescription, hook: str) -> Any:
    """The object `family`'s `hook` reference ("module:attribute") names, imported now."""
    ref = getattr(family, hook)
    module, _, attr = (ref or "").partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as e:
        raise FastpipesError(
            f"family {family.name!r}: its {hook} reference {ref!r} cannot be loaded ({e}); "
            "expected 'package.module:Name', e.g. 'fastpipes.sam.bench:SamWorkload'") from e
