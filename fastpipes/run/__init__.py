"""Run accelerated pipelines on real inputs: ``fastpipes run sam|sdxl|llama``.

>>> summary = fastpipes.run_sam("photos/", "out/", everything=True, model="vit_b",
...                             checkpoint="sam_vit_b_01ec64.pth")  # doctest: +SKIP
"""
from fastpipes.run.amg import AmgConfig, generate_masks
from fastpipes.run.jobs import Item, Job, RunSummary, Worker, run_job
from fastpipes.run.sam import SamJob, run_sam

__all__ = ["AmgConfig", "Item", "Job", "RunSummary", "SamJob", "Worker", "generate_masks",
           "run_job", "run_sam"]
