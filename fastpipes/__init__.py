"""fastpipes: YAML recipes that accelerate SAM, SDXL and Llama pipelines, measured against FP32.

>>> import fastpipes
>>> report = fastpipes.accelerate(pipe, recipe="sdxl_bf16")  # doctest: +SKIP
>>> summary = fastpipes.run_sam("photos/", "out/", points="320,240",
...                             checkpoint="sam_vit_b_01ec64.pth")  # doctest: +SKIP
"""
import fastpipes.passes  # noqa: F401  (registers every pass and its recipe section)
from fastpipes._version import __version__
from fastpipes.api import accelerate
from fastpipes.errors import (ConflictError, FastpipesError, HardwareError, InputError, PassError,
                              PreflightError, RecipeError, UnsupportedPipelineError)
from fastpipes.recipe import PrecisionClass, load_recipe
from fastpipes.report import Report
from fastpipes.run import run_llama, run_sam, run_sdxl
from fastpipes.llama.pipeline import load_llama

__all__ = ["accelerate", "load_recipe", "Report", "PrecisionClass", "ConflictError",
           "FastpipesError", "HardwareError", "InputError", "PassError", "PreflightError",
           "RecipeError", "UnsupportedPipelineError", "load_llama", "run_llama", "run_sam", "run_sdxl",
           "__version__"]
