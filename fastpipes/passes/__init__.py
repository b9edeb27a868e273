"""Optimization passes. Importing this package registers every pass and its recipe section."""
from fastpipes.passes import attention, fuse_qkv, memory_format  # noqa: F401
from fastpipes.passes.base import PASSES, PassContext, SkipPass, register_pass

__all__ = ["PASSES", "PassContext", "SkipPass", "register_pass"]
