"""Benchmark workloads, one module per family, registered in :data:`WORKLOADS` on import.

Model libraries (segment-anything, diffusers, transformers) are imported only when a
workload builds its pipeline.
"""
from fastpipes.bench.workloads import llama, sam, sdxl, toy  # noqa: F401  (register)
from fastpipes.bench.workloads.base import (WORKLOADS, Workload, WorkloadSpec, get_workload,
                                            register_workload)

__all__ = ["WORKLOADS", "Workload", "WorkloadSpec", "get_workload", "register_workload"]
