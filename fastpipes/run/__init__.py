"""Run accelerated pipelines on real inputs: ``fastpipes run sam|sdxl|llama``.

One public function per family backs the command line; each builds the FP32 pipeline once,
accelerates it with a recipe (default ``auto``), and runs a resumable job over the inputs,
locally or on Ray (``engine="ray"``; :class:`fastpipes.run.ray_engine.RunActor` is the
building block for your own Ray Data pipelines).

>>> summary = fastpipes.run_sam("photos/", "out/", everything=True, model="vit_b",
...                             checkpoint="sam_vit_b_01ec64.pth")  # doctest: +SKIP
>>> print(summary)                                                  # doctest: +SKIP

The command line finds each family's job through its description (fastpipes/family.py); the
re-exports below are the Python API, not a registration.
"""
from fastpipes.sam.amg import AmgConfig, generate_masks
from fastpipes.run.base import Item, ItemResult, Job, Worker
from fastpipes.run.jobs import RunSummary, run_job
from fastpipes.llama.run import LlamaJob, run_llama
from fastpipes.sam.run import SamJob, run_sam
from fastpipes.sdxl.run import SdxlJob, run_sdxl

__all__ = ["AmgConfig", "Item", "ItemResult", "Job", "LlamaJob", "RunSummary", "SamJob",
           "SdxlJob", "Worker", "generate_masks", "run_job", "run_llama", "run_sam",
           "run_sdxl"]
