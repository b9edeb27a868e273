"""Optimization passes. Importing this package registers every pass and its recipe section."""
from fastpipes.passes import (attention, compile, fuse_qkv, ipex, kv_cache,  # noqa: F401
                              memory_format, openvino, precision, prepack, quantize)
from fastpipes.passes.base import PASSES, PassContext, SkipPass, register_pass

__all__ = ["PASSES", "PassContext", "SkipPass", "register_pass"]
