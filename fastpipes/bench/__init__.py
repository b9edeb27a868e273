"""Benchmark harness: FP32 eager baseline vs recipes, each in a fresh process.

>>> from fastpipes.bench import WorkloadSpec, run_benchmark
>>> result = run_benchmark(WorkloadSpec("sam", size="tiny"), ["sam_fp32_fast"])  # doctest: +SKIP
>>> result.write_json("sam.json"); result.plot("sam.png")                       # doctest: +SKIP
"""
from fastpipes.bench.result import BenchResult, ConfigResult, check_schema
from fastpipes.bench.runner import plan, run_benchmark
from fastpipes.bench.workload import WORKLOADS, Fidelity, Workload, WorkloadSpec, get_workload

__all__ = ["BenchResult", "ConfigResult", "Fidelity", "WORKLOADS", "Workload", "WorkloadSpec",
           "check_schema", "get_workload", "plan", "run_benchmark"]
