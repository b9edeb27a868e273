"""Adapters *describe* a pipeline to the passes; they hold no optimization logic.

An adapter says which object it understands, the pipeline's named components, which
components each pass touches by default, where its attention lives, which plain objects
(configs, wrappers) a pass may mutate, and how to put a replaced component back.
Third-party libraries are imported lazily inside adapters' methods.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn as nn

from fastpipes.errors import UnsupportedPipelineError
from fastpipes.recipe.schema import Family
from fastpipes.registry import Registry


@dataclass
class AttentionSite:
    """A group of attention modules of one kind inside one component.

    ``kind`` selects the attention pass's handler: "sam_relpos" (segment-anything
    image-encoder Attention), "diffusers" (diffusers Attention + processors), "hf"
    (transformers attn_implementation), ...
    """

    kind: str
    component: str
    modules: list[tuple[str, nn.Module]] = field(default_factory=list)
    owner: Any = None  # the object the handler configures (e.g. a transformers model)


class Adapter:
    """Base class of pipeline adapters. Subclasses set the ClassVars and override methods."""

    name: ClassVar[str] = "adapter"
    family: ClassVar[Family] = Family.any
    description: ClassVar[str] = ""
    priority: ClassVar[int] = 0  # higher is tried first

    def __init__(self, obj: Any):
        self.obj = obj

    @classmethod
    def matches(cls, obj: Any) -> bool:
        raise NotImplementedError

    def components(self) -> dict[str, nn.Module]:
        """Every named component (``{"unet": ..., "vae": ...}``), in a stable order."""
        raise NotImplementedError

    def default_components(self, pass_name: str) -> list[str]:
        """Components a pass works on when the recipe names none. Default: all."""
        return list(self.components())

    def set_component(self, name: str, module: nn.Module) -> None:
        """Put `module` in place of component `name` (used by passes that wrap modules)."""
        raise NotImplementedError(f"{self.name} cannot replace component {name!r}")

    def state_objects(self) -> list[Any]:
        """Plain (non-Module) objects whose attributes passes may change; snapshotted."""
        return [self.obj]

    def attention_sites(self) -> list[AttentionSite]:
        return []

    def entry_points(self) -> list[tuple[str, nn.Module]]:
        """(component name, module) pairs whose forward is a call boundary for autocast."""
        return list(self.components().items())

    # -- what recipe="auto" needs to measure a pipeline on its own inputs ---------------
    higher_is_better: ClassVar[bool] = False  # of the score compare() returns

    def example_inputs(self) -> Any:
        """Inputs to time when the user gives none; families override."""
        from fastpipes.errors import FastpipesError

        raise FastpipesError(f"recipe='auto' needs example_inputs=... for a {self.name} pipeline "
                             "(the inputs it will be called with)")

    def call(self, inputs: Any) -> Any:
        """Run the pipeline once on `inputs` (tuple -> *args, dict -> **kwargs)."""
        if isinstance(inputs, dict):
            return self.obj(**inputs)
        if isinstance(inputs, (tuple, list)):
            return self.obj(*inputs)
        return self.obj(inputs)

    def compare(self, reference: Any, output: Any) -> tuple[float, bool]:
        """(relative L2 error over all float tensors, within 2e-2?) — families override."""
        num = den = 0.0
        for r, o in zip(_tensors(reference), _tensors(output)):
            num += float((o.float() - r.float()).pow(2).sum())
            den += float(r.float().pow(2).sum())
        err = (num / den) ** 0.5 if den else float(num > 0)
        return err, err <= 2e-2

    def device(self) -> torch.device:
        for m in self.components().values():
            for p in m.parameters():
                return p.device
        return torch.device("cpu")


def _tensors(obj: Any) -> list[torch.Tensor]:
    """Float tensors in a nested output (tensors, tuples, lists, dicts, ModelOutputs)."""
    if isinstance(obj, torch.Tensor):
        return [obj] if obj.is_floating_point() else []
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in _tensors(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in _tensors(v)]
    if hasattr(obj, "__dataclass_fields__"):
        return [t for k in obj.__dataclass_fields__ for t in _tensors(getattr(obj, k))]
    return []


ADAPTERS: Registry[type[Adapter]] = Registry("pipeline adapter")


def register_adapter(cls: type[Adapter]) -> type[Adapter]:
    ADAPTERS.add(cls.name, cls)
    return cls


def find_adapter(obj: Any) -> Adapter:
    """The adapter for `obj`, or UnsupportedPipelineError listing what is supported."""
    import fastpipes.pipelines  # noqa: F401  (registers the adapters)

    for _, cls in sorted(ADAPTERS.items(), key=lambda kv: -kv[1].priority):
        if cls.matches(obj):
            return cls(obj)
    supported = "; ".join(f"{n} ({c.description})" for n, c in ADAPTERS.items())
    raise UnsupportedPipelineError(
        f"fastpipes does not know how to accelerate a {type(obj).__module__}."
        f"{type(obj).__qualname__}. Supported: {supported}"
    )
