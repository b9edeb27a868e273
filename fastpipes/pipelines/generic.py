"""Any plain ``nn.Module``: the generic passes (precision, layout, compile, quantize)."""
from __future__ import annotations

from typing import Any

import torch.nn as nn

from fastpipes.pipelines.base import Adapter, register_adapter
from fastpipes.recipe.schema import Family


@register_adapter
class ModuleAdapter(Adapter):
    name = "module"
    family = Family.any
    description = "any torch.nn.Module, as one component named 'model'"
    priority = -100  # the last resort: family adapters match first

    @classmethod
    def matches(cls, obj: Any) -> bool:
        return isinstance(obj, nn.Module)

    def components(self) -> dict[str, nn.Module]:
        return {"model": self.obj}

    def state_objects(self) -> list[Any]:
        return []  # the module itself is snapshotted as a component
