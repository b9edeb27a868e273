"""One benchmark configuration in a fresh process: ``python -m fastpipes.bench.worker JOB.json``
(started through bench/lifeline.py, which ties its life to the benchmark's).

A fresh interpreter per configuration means torch.compile caches, Inductor flags, patched
modules and allocator state of one recipe cannot leak into the next. The parent reads
``events`` (JSON lines: phase and step, for the progress display) and ``result`` (one JSON
object written atomically at the end, even when the configuration fails).
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time
import traceback
from typing import Any, Callable

from fastpipes.api import accelerate
from fastpipes.auto import AutoTarget, accelerate_auto
from fastpipes.bench.job import BenchJob
from fastpipes.bench.limits import measure_limits
from fastpipes.bench.profile import enable_kernel_names, flops_by_group, profile_call
from fastpipes.bench.workloads import get_workload
from fastpipes.files import atomic_file, atomic_write
from fastpipes.passes.compile_runtime import cache_counts
from fastpipes.timing import timed


class Events:
    """Append-only JSON-lines log the parent tails for live progress."""

    def __init__(self, path: str, steps: int):
        self.path, self.steps, self.step, self.phase = path, steps, 0, "start"

    def __call__(self, phase: str, advance: int = 0) -> None:
        self.phase, self.step = phase, self.step + advance
        with open(self.path, "a") as f:
            f.write(json.dumps({"t": time.time(), "phase": phase, "step": self.step,
                                "steps": self.steps}) + "\n")


def _attempt(notes: list[str], what: str, fn: Callable, *args) -> Any:
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001  (reported in the row's reason)
        notes.append(f"{what} failed: {type(e).__name__}: {e}")
        return None


def check_portable(obj: Any, where: str = "output") -> None:
    """Outputs cross processes (torch.save, then torch.load(weights_only=True)): only
    tensors, numbers, strings, None and lists/tuples/dicts of them can."""
    import torch

    if isinstance(obj, (torch.Tensor, int, float, bool, str, type(None))):
        return
    if isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            check_portable(item, f"{where}[{i}]")
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            check_portable(v, f"{where}[{k!r}]")
        return
    raise TypeError(f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}; what "
                    "Workload.view() returns must be tensors, numbers, strings or "
                    "lists/tuples/dicts of them (it is saved by the baseline process and "
                    "loaded with weights_only=True by each recipe process)")


def on_cpu(obj: Any) -> Any:
    """`obj` with every tensor in it moved to the CPU (views of a CUDA run are saved,
    loaded and compared there, whatever device each configuration ran on)."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, (list, tuple)):
        return type(obj)(on_cpu(v) for v in obj)
    if isinstance(obj, dict):
        return {k: on_cpu(v) for k, v in obj.items()}
    return obj


def _view(workload: Any, pipe: Any, inputs: Any, output: Any, reference: Any = None) -> Any:
    value = workload.view(pipe, inputs, output, reference)
    check_portable(value)
    return on_cpu(value)


def _save_reference(workload: Any, pipe: Any, inputs: Any, output: Any, path: str) -> None:
    import torch

    value = _view(workload, pipe, inputs, output)
    atomic_file(path, lambda tmp: torch.save(value, tmp))  # never half a reference


def _fidelity(workload: Any, pipe: Any, inputs: Any, output: Any, path: str,
              klass: str) -> Any:
    """This configuration against the FP32 reference, by the bars of its precision class."""
    import torch

    reference = torch.load(path, weights_only=True)
    view = _view(workload, pipe, inputs, output, reference)
    return workload.compare(pipe, reference, view, klass)


def peak_rss_mb() -> float:
    """Peak resident memory of this process (ru_maxrss: KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def run_limits(job: BenchJob, events: Events) -> dict:
    import torch

    torch.set_num_threads(job.threads)
    events("limits")
    return {"limits": measure_limits(job.device, quick=job.limits_quick).to_dict()}


def _accelerate(workload: Any, pipe: Any, inputs: Any, recipe: Any,
                auto_overrides: list[str] | None = None,
                say: Callable[[str], None] | None = None) -> Any:
    """Apply `recipe`; "auto" searches with this workload's own timed call and fidelity
    bars, so it picks what this benchmark would rank first among faithful recipes."""
    if recipe != "auto":
        return accelerate(pipe, recipe)
    target = AutoTarget(call=lambda: workload.run(pipe, inputs),
                        view=lambda out, ref: workload.view(pipe, inputs, out, ref),
                        compare=lambda ref, view, klass: workload.compare(pipe, ref, view, klass),
                        name=f"bench:{workload.family}", inputs=workload.describe())
    return accelerate_auto(pipe, auto_overrides or None, example_inputs=inputs, target=target,
                           say=say)


def run_config(job: BenchJob, events: Events) -> dict:
    import torch

    spec = job.spec
    torch.set_num_threads(job.threads)
    if job.profile:
        enable_kernel_names()  # before anything compiles
    if spec.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    out: dict[str, Any] = {}

    events("build", 1)
    workload = get_workload(spec)
    out["workload"] = {"family": spec.family, "description": workload.describe(),
                       "unit": workload.unit, "bound": workload.bound}
    out["build_s"], pipe = timed(lambda: workload.build_for(job.recipe), spec.device)
    inputs = workload.inputs(pipe)
    report = None
    out["precision_class"] = "exact"  # FP32 eager; a recipe row: its applied passes' class
    if job.recipe is not None:
        events("accelerate", 1)
        out["accelerate_s"], report = timed(lambda: _accelerate(
            workload, pipe, inputs, job.recipe, job.auto_overrides,
            lambda text: events(f"auto: {text}")), spec.device)
        out["report"] = report.to_dict()
        out["precision_class"] = report.precision_class

    def call():
        return workload.run(pipe, inputs)

    output = _calls(job, call, events, out)
    if job.kind == "warm":  # a second start: only what it costs to get going again
        return out
    out["items"] = workload.items(inputs)
    out["bytes_per_item"] = workload.bytes_per_item(pipe)
    if report is not None:  # again: a pass can fall back at the first call (compile)
        out["report"] = report.to_dict()
    # after the timings: a failure here costs the row a number, not its measurements
    events("extras", 1)
    out["notes"] = _extras(job, workload, pipe, inputs, output, call, out)
    if spec.device.startswith("cuda"):
        out["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def _calls(job: BenchJob, call: Callable[[], Any], events: Events, out: dict) -> Any:
    """The first call (compile), then, unless this is a second start, the warm-up and the
    timed calls; fills `out`'s timings and returns the last output."""
    counts = cache_counts()
    events("first call (compile)", 1)
    out["first_call_s"], output = timed(call, job.device)
    out["cache_counts"] = {k: v - counts[k] for k, v in cache_counts().items()
                           if v - counts[k]}
    if job.kind == "warm":
        return output
    for _ in range(job.warmup):
        events("warm-up", 1)
        timed(call, job.device)
    times = []
    for _ in range(job.iters):
        events("timed", 1)
        t, output = timed(call, job.device)
        times.append(t)
    median = statistics.median(times)
    out["latency_s"] = {"median": median, "min": min(times), "max": max(times), "runs": times}
    # what the first call cost beyond a steady-state call: compilation, autotuning, lazy init
    out["compile_s"] = max(0.0, out["first_call_s"] - median)
    return output


def _extras(job: BenchJob, workload: Any, pipe: Any, inputs: Any, output: Any,
            call: Callable[[], Any], out: dict) -> list[str]:
    """Extra metrics, the profile, FLOPs and the reference (baseline) or fidelity (recipe)
    into `out`; what failed, as notes."""
    notes: list[str] = []
    out["extra"] = _attempt(notes, "extra metrics", workload.extra_metrics, pipe, inputs) or {}
    if job.profile:
        out["profile"] = _attempt(notes, "profile", profile_call, call)
        if job.baseline:
            out["flops_by_group"] = _attempt(notes, "FLOPs by group", flops_by_group, call)
    if job.baseline:
        # the FP32 work of one run: the same for every recipe
        out["flops"] = _attempt(notes, "FLOP count", workload.flops, pipe, inputs)
        _attempt(notes, "saving the FP32 reference output", _save_reference, workload, pipe,
                 inputs, output, job.reference)
    elif os.path.exists(job.reference):
        fid = _attempt(notes, "fidelity", _fidelity, workload, pipe, inputs, output,
                       job.reference, out["precision_class"])
        if fid is not None:
            out["fidelity"] = {"metrics": {k: float(v) for k, v in fid.metrics.items()},
                               "ok": fid.ok, "thresholds": fid.thresholds,
                               "precision_class": fid.precision_class, "note": fid.note}
    else:
        notes.append("no fidelity: the FP32 baseline left no reference output")
    return notes


def main(argv: list[str]) -> int:
    with open(argv[0]) as f:
        job = BenchJob.from_json(f.read())
    events = Events(job.events, job.steps)
    try:
        result = run_limits(job, events) if job.kind == "limits" else run_config(job, events)
        result["status"] = "ok"
    except BaseException as e:  # noqa: BLE001  (a failed configuration is a result)
        result = {"status": "failed", "phase": events.phase,
                  "reason": f"{type(e).__name__} during {events.phase}: {e}".strip(),
                  "traceback": traceback.format_exc()}
    result["peak_rss_mb"] = peak_rss_mb()
    # the parent never reads a half-written result
    atomic_write(job.result, json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
