"""What a pass sees of a pipeline: its structure, as a Protocol below the passes.

Pipeline adapters (``fastpipes.pipelines.base.Adapter``, one per family folder) provide it;
passes only read and change what is listed here, so they never import the families that sit
above them. How a pipeline is exercised and judged (example inputs, fidelity views, bars per
precision class) is not the passes' business and stays with the adapter contract.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn as nn


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


class PipelineStructure(Protocol):
    """The structural part of an adapter: named components, where attention lives, call
    boundaries, and how to put a replaced component back."""

    name: str  # the adapter's name, e.g. "sam"
    family: str  # the recipe family it serves (a registered name, e.g. "sam" or "generic")

    def components(self) -> dict[str, nn.Module]:
        """Every named component (``{"unet": ..., "vae": ...}``), in a stable order."""

    def default_components(self, pass_name: str) -> list[str]:
        """Components a pass works on when the recipe names none."""

    def set_component(self, name: str, module: nn.Module) -> None:
        """Put `module` in place of component `name` (passes that wrap modules)."""

    def state_objects(self) -> list[Any]:
        """Plain (non-Module) objects whose attributes passes may change; snapshotted."""

    def attention_sites(self) -> list[AttentionSite]:
        """The attention modules, grouped by kind and component."""

    def entry_points(self) -> list[tuple[str, nn.Module]]:
        """(component name, module) pairs whose forward is a call boundary for autocast."""

    def fp32_entries(self) -> list[tuple[str, nn.Module, str]]:
        """(component, object, method) where a component kept in FP32 is fed low-precision
        outputs of another (the precision pass upcasts there)."""

    def device(self) -> torch.device:
        """Where the pipeline's weights are."""
