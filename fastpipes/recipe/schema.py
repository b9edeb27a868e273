"""Typed schema of a recipe.

A recipe is a YAML mapping with a few header keys and one section per pass::

    name: sam_fp32_fast            # header (RecipeHeader)
    family: sam
    requires: {native_bf16: false}
    attention: {backend: sdpa}     # a section, typed by the pass that registered it
    compile: {mode: max-autotune}

Pass sections are registered by the passes into :data:`SECTIONS` (its first read imports
every pass), so the list of allowed keys lives in exactly one place; the ``auto``
section, which is not a pass, is declared here.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any

from fastpipes.registry import Registry


GENERIC = "generic"  # the family of recipes that fit any model (any ``torch.nn.Module``)

# The pipeline families a recipe may name (``family:``), each with the component names its
# pipelines can have: None for generic recipes, which fit any model (the model is one component
# named ``model``) and are checked at accelerate(). Filled by the family descriptions
# (fastpipes/family.py) as the passes fill SECTIONS, so the list of allowed families lives in
# one place. A recipe that names its family is checked against it when it loads, so
# `components: [nope]` fails `recipes validate`, not accelerate().
FAMILY_COMPONENTS: Registry[tuple[str, ...] | None] = Registry("pipeline family",
                                                               filled_by="fastpipes.families")
# family -> its benchmark workloads (``fastpipes bench FAMILY --workload``), the default first
FAMILY_WORKLOADS: Registry[tuple[str, ...]] = Registry("pipeline family",
                                                       filled_by="fastpipes.families")


class PrecisionClass(str, Enum):
    """The numerics a recipe computes in, derived from its passes (never hand-labelled);
    each family states its fidelity bars per class. Listed from strictest to loosest.

    - exact: FP32 numerics; only the order of summation changes (compile, SDPA, layouts);
    - fp16 / bf16: reduced-precision floating-point compute (autocast or cast weights);
    - int8: int8 weights (weight-only or dynamic W8A8);
    - int4: int4 weights (group-wise).
    """

    exact = "exact"
    fp16 = "fp16"
    bf16 = "bf16"
    int8 = "int8"
    int4 = "int4"

    @property
    def rank(self) -> int:
        return list(PrecisionClass).index(self)

    @classmethod
    def loosest(cls, classes) -> "PrecisionClass":
        """The loosest of `classes` (exact when empty): what a combination computes in."""
        return max(classes, key=lambda c: c.rank, default=cls.exact)


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
    openvino: bool = False  # OpenVINO imports (`pip install 'fastpipes[openvino]'`)


@dataclass(frozen=True)
class RecipeHeader:
    """The keys every recipe may carry besides its pass sections."""

    name: str = ""
    description: str = ""
    family: str = GENERIC  # a registered family (FAMILY_COMPONENTS)
    base: str | None = None  # a built-in recipe name or a path relative to this file
    requires: Requires = field(default_factory=Requires)
    # keep the originals accelerate() needs to undo a failure on disk, not in memory: a cast
    # or quantize then never holds a model's old and new weights at once (costs writing the
    # replaced weights once to a private temporary file)
    low_memory: bool = False
    # the benchmark workload the recipe is made for (its family's ``--workload``, e.g. SAM's
    # click); null: the family's default workload. ``fastpipes bench`` with no --recipes runs
    # the recipes made for the workload it measures
    workload: str | None = None


@dataclass(frozen=True)
class Section:
    """Base of every recipe section. ``enabled: false`` keeps a section but skips it.

    A pass's section says three things about itself: its cross-field problems
    (:meth:`check`, at load time), the numerics it computes in (:meth:`numerics`, from
    which a recipe's precision class is derived) and what it needs from a given pipeline
    and machine (``preflight``, see fastpipes.passes.preflight).
    """

    enabled: bool = True

    def check(self) -> list[tuple[str, str, str]]:
        """Cross-field problems as (key, message, allowed); empty when fine."""
        return []

    def numerics(self) -> "PrecisionClass":
        """The precision class this section computes in (exact unless it changes dtypes)."""
        return PrecisionClass.exact


# filled by the passes (each registers its section); the first read imports them all
SECTIONS: Registry[type[Section]] = Registry("recipe section", filled_by="fastpipes.passes")


@dataclass(frozen=True)
class AutoConfig(Section):
    """The ``auto`` section: how recipe="auto" searches (fastpipes.auto)."""

    budget_s: float = 300.0  # stop trying new candidates after this long (compile included)
    candidates: list[str] = field(default_factory=list)  # extra recipes (names or paths)
    # recipes auto must not try (names as candidates would have them), e.g. the ones a job
    # cannot use: `fastpipes run llama --sample` leaves out the greedy-only OpenVINO ones
    exclude: list[str] = field(default_factory=list)
    builtin: bool = True  # also try the built-in recipes of the family whose requires are met
    iters: int = 3  # timed calls per candidate (median kept), after one warm-up call
    # the loosest precision class auto may pick; each candidate is judged by its own
    # class's bars (exact < fp16 < bf16 < int8 < int4)
    max_class: PrecisionClass = PrecisionClass.int4
    # then try the winner with each of its passes dropped: a pass that costs time on this
    # machine is left out ("sam_bf16 without compile")
    ablate: bool = True
    cache: bool = True  # reuse / store decisions on disk

    def check(self) -> list[tuple[str, str, str]]:
        out = []
        if not self.budget_s > 0:  # also refuses nan
            out.append(("budget_s", f"must be > 0, got {self.budget_s}", "a positive number"))
        if self.iters < 1:
            out.append(("iters", f"must be >= 1, got {self.iters}", "a positive integer"))
        return out


SECTIONS.add("auto", AutoConfig)

HEADER_KEYS = tuple(f.name for f in fields(RecipeHeader))  # the keys besides pass sections


@dataclass(frozen=True)
class Recipe:
    """A loaded, validated recipe: the header plus the sections it sets.

    ``sections`` holds only the sections the recipe (or its bases) names, in file order.
    """

    name: str
    description: str = ""
    family: str = GENERIC  # a registered family (FAMILY_COMPONENTS)
    requires: Requires = field(default_factory=Requires)
    low_memory: bool = False
    workload: str | None = None  # made for this benchmark workload; None: the default one
    sections: dict[str, Section] = field(default_factory=dict)
    source: str = "<api>"  # the file it was loaded from
    chain: tuple[str, ...] = ()  # the inheritance chain, leaf first
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def section(self, name: str) -> Section | None:
        """The section `name` if the recipe sets it and it is enabled, else None."""
        sec = self.sections.get(name)
        return sec if sec is not None and sec.enabled else None

    @property
    def precision_class(self) -> PrecisionClass:
        """The loosest numerics of the enabled sections (e.g. bf16 for BF16 autocast + compile)."""
        return PrecisionClass.loosest(s.numerics() for s in self.sections.values() if s.enabled)

    def to_yaml(self) -> str:
        """The fully resolved recipe as YAML (what ``fastpipes recipes show`` prints)."""
        from omegaconf import OmegaConf

        return OmegaConf.to_yaml(OmegaConf.create(self.raw))
