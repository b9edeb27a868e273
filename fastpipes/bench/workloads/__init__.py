"""Benchmark workloads: the contract (``base``). Each family's workload lives in its folder
(``fastpipes/<family>/bench.py``) and is named by the family's description (fastpipes/family.py);
:data:`WORKLOADS` reads them from the family registry.

Model libraries (segment-anything, diffusers, transformers) are imported only when a
workload builds its pipeline.
"""
from fastpipes.bench.workloads.base import WORKLOADS, Workload, WorkloadSpec, get_workload

__all__ = ["WORKLOADS", "Workload", "WorkloadSpec", "get_workload"]
