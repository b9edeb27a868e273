"""Optimization passes. Importing this package registers every pass and its recipe section."""
<<<<<<< HEAD
from fastpipes.passes import attention, compile, ipex, memory_format, precision  # noqa: F401
=======
from fastpipes.passes import attention, memory_format  # noqa: F401
from fastpipes.passes import kv_cache, quantize  # noqa: F401
>>>>>>> llama
from fastpipes.passes.base import PASSES, PassContext, SkipPass, register_pass

__all__ = ["PASSES", "PassContext", "SkipPass", "register_pass"]
