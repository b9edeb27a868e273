"""Any plain ``nn.Module`` ("generic" everywhere: the family, this adapter, the generic_*
recipes): the passes that need no knowledge of the model (precision, layout, compile,
quantize), with the model as one component named ``model``."""
from __future__ import annotations

from typing import Any

import torch.nn as nn

from fastpipes.fidelity import Bar
from fastpipes.pipelines.base import Adapter
from fastpipes.recipe.schema import PrecisionClass

_ERR = "relative L2 error of the outputs"
GENERIC_BARS = {
    PrecisionClass.exact: (Bar("rel_error", "<=", 1e-3, _ERR),),
    PrecisionClass.fp16: (Bar("rel_error", "<=", 3e-2, _ERR),),
    PrecisionClass.bf16: (Bar("rel_error", "<=", 3e-2, _ERR),),
    PrecisionClass.int8: (Bar("rel_error", "<=", 5e-2, _ERR),),
    PrecisionClass.int4: (Bar("rel_error", "<=", 1e-1, _ERR),),
}


class GenericAdapter(Adapter):
    name = "generic"
    family = "generic"
    description = "any torch.nn.Module, as one component named 'model'"
    priority = -100  # the last resort: family adapters match first
    BARS = GENERIC_BARS

    @classmethod
    def matches(cls, obj: Any) -> bool:
        return isinstance(obj, nn.Module)

    def components(self) -> dict[str, nn.Module]:
        return {"model": self.obj}

    def state_objects(self) -> list[Any]:
        return []  # the module itself is snapshotted as a component
