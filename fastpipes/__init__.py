"""fastpipes: YAML recipes that accelerate SAM, SDXL and Llama pipelines, measured against FP32.

>>> import fastpipes
>>> report = fastpipes.accelerate(pipe, recipe="sdxl_bf16")  # doctest: +SKIP
>>> summary = fastpipes.run_sam("photos/", "out/", points="320,240",
...                             checkpoint="sam_vit_b_01ec64.pth")  # doctest: +SKIP
"""
from fastpipes.api import accelerate
from fastpipes.errors import (FastpipesError, HardwareError, InputError, PassError, RecipeError,
                              UnsupportedPipelineError)
from fastpipes.recipe import load_recipe
from fastpipes.report import Report
from fastpipes.run import run_llama, run_sam, run_sdxl

__version__ = "0.1.0"
__all__ = ["accelerate", "load_recipe", "Report", "FastpipesError", "HardwareError",
           "InputError", "PassError", "RecipeError", "UnsupportedPipelineError", "run_llama",
           "run_sam", "run_sdxl", "__version__"]
