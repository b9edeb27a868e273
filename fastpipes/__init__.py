"""fastpipes: YAML recipes that accelerate SAM, SDXL and Llama pipelines, measured against FP32.

>>> import fastpipes
>>> report = fastpipes.accelerate(pipe, recipe="sdxl_bf16")  # doctest: +SKIP
>>> summary = fastpipes.run_sam("photos/", "out/", points="320,240",
...                             checkpoint="sam_vit_b_01ec64.pth")  # doctest: +SKIP
"""
import importlib

from fastpipes._version import __version__
from fastpipes.errors import (ConflictError, FastpipesError, HardwareError, InputError, PassError,
                              PreflightError, RecipeError, UnsupportedPipelineError)

# Imported on first use: every `fastpipes` command imports this package first, and
# `fastpipes --help` must not pay ~1 s for torch (tests/test_cli_startup.py). The passes and
# families register themselves when a registry is first read (fastpipes/registry.py).
_LAZY = {"accelerate": "fastpipes.api", "load_recipe": "fastpipes.recipe",
         "PrecisionClass": "fastpipes.recipe", "Report": "fastpipes.report",
         "run_llama": "fastpipes.run", "run_sam": "fastpipes.run", "run_sdxl": "fastpipes.run",
         "load_llama": "fastpipes.llama.pipeline"}

__all__ = ["accelerate", "load_recipe", "Report", "PrecisionClass", "ConflictError",
           "FastpipesError", "HardwareError", "InputError", "PassError", "PreflightError",
           "RecipeError", "UnsupportedPipelineError", "load_llama", "run_llama", "run_sam", "run_sdxl",
           "__version__"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'fastpipes' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # the next access is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
