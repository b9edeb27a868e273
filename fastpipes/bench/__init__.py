"""Benchmark harness: FP32 eager baseline vs recipes, each in a fresh process.

>>> from fastpipes.bench import WorkloadSpec, render, run_benchmark
>>> result = run_benchmark(WorkloadSpec("sam", size="tiny"), ["sam_fp32_fast"])  # doctest: +SKIP
>>> print(render.markdown(result))                                              # doctest: +SKIP
"""
from fastpipes.bench import render
from fastpipes.bench.plan import plan
from fastpipes.bench.result import BenchResult, ConfigResult, RunStatus, check_schema
from fastpipes.bench.runner import run_benchmark
from fastpipes.bench.workloads import WORKLOADS, Workload, WorkloadSpec, get_workload

__all__ = ["BenchResult", "ConfigResult", "RunStatus", "WORKLOADS", "Workload", "WorkloadSpec",
           "check_schema", "get_workload", "plan", "render", "run_benchmark"]
