"""Optimization passes. Importing this package registers every pass and its recipe section."""
from fastpipes.passes import (attention, compile, ipex, kv_cache, memory_format,  # noqa: F401
                              precision, quantize)
from fastpipes.passes.base import PASSES, PassContext, SkipPass, register_pass

__all__ = ["PASSES", "PassContext", "SkipPass", "register_pass"]
