"""Benchmark workloads, one per family (``fastpipes/<family>/bench.py``), registered in :data:`WORKLOADS` on import.

Model libraries (segment-anything, diffusers, transformers) are imported only when a
workload builds its pipeline.
"""
import fastpipes.generic.bench  # noqa: F401  (each family's workload registers on import)
import fastpipes.llama.bench  # noqa: F401
import fastpipes.sam.bench  # noqa: F401
import fastpipes.sdxl.bench  # noqa: F401
from fastpipes.bench.workloads.base import (WORKLOADS, Workload, WorkloadSpec, get_workload,
                                            register_workload)

__all__ = ["WORKLOADS", "Workload", "WorkloadSpec", "get_workload", "register_workload"]
