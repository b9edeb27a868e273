"""Run accelerated pipelines on real inputs: ``fastpipes run sam|sdxl|llama``.

One public function per family backs the command line; each builds the FP32 pipeline once,
accelerates it with a recipe (default ``auto``), and runs a resumable job over the inputs,
locally or on Ray (``engine="ray"``; :class:`fastpipes.run.ray_engine.RunActor` is the
building block for your own Ray Data pipelines).

>>> summary = fastpipes.run_sam("photos/", "out/", everything=True, model="vit_b",
...                             checkpoint="sam_vit_b_01ec64.pth")  # doctest: +SKIP
>>> print(summary)                                                  # doctest: +SKIP

The command line finds each family's job through its description (fastpipes/family.py); the
re-exports below are the Python API, not a registration. The families' names are imported on
first use: their modules sit above this package (``fastpipes/sam/run.py`` imports
``fastpipes.run.base``), so importing them here would be a circle whenever a family's run
module is the one imported first (the CLI resolves ``fastpipes.sam.run:SamJob``).
"""
import importlib

from fastpipes.run.base import Item, ItemResult, Job, Worker
from fastpipes.run.jobs import RunSummary, run_job

_LAZY = {"AmgConfig": "fastpipes.sam.amg", "generate_masks": "fastpipes.sam.amg",
         "LlamaJob": "fastpipes.llama.run", "run_llama": "fastpipes.llama.run",
         "SamJob": "fastpipes.sam.run", "run_sam": "fastpipes.sam.run",
         "SdxlJob": "fastpipes.sdxl.run", "run_sdxl": "fastpipes.sdxl.run"}

__all__ = ["AmgConfig", "Item", "ItemResult", "Job", "LlamaJob", "RunSummary", "SamJob",
           "SdxlJob", "Worker", "generate_masks", "run_job", "run_llama", "run_sam",
           "run_sdxl"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'fastpipes.run' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
