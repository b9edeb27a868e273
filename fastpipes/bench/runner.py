"""run_benchmark(): the FP32 eager baseline and each recipe, each in its own fresh process.

The parent checks the arguments and plans (bench/plan.py: which recipes, validated before
anything is built), builds one job per configuration, runs one worker process per job in
turn (``python -m fastpipes.bench.worker``), shows progress, kills a worker that exceeds
``max_time``, and assembles the result with speedups and machine-limit shares. It builds no
model itself. Ctrl-C or SIGTERM stops the running worker and returns the rows measured so
far, marked interrupted; a work directory left by a killed run is swept by the next one.
"""
from __future__ import annotations

import datetime as _dt
import math
import shlex
import signal
import sys
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch

from fastpipes._version import __version__
from fastpipes.bench.limits import share_of
from fastpipes.bench.noise import load_per_cpu, noise_verdict
from fastpipes.bench.plan import AUTO, Planned, compiles, plan
from fastpipes.bench.job import BenchJob
from fastpipes.bench.processes import Interrupted, make_workdir, remove_workdir, run_worker
from fastpipes.bench.progress import make_progress
from fastpipes.bench.result import CUT, FAILED, NOT_RUN, BenchResult, ConfigResult, RunStatus
from fastpipes.bench.workloads import WORKLOADS, WorkloadSpec, get_workload
from fastpipes.bounds import check_int
from fastpipes.errors import BenchmarkError, InputError
from fastpipes.hardware import check_device, detect
from fastpipes.recipe.load import shown_source


# ---- the benchmark ----------------------------------------------------------------------------

def check_arguments(spec: WorkloadSpec, iters: int, warmup: int, threads: int | None,
                    max_time: float | None, baseline: bool) -> WorkloadSpec:
    """Every argument problem as one BenchmarkError, before any worker starts; then the
    spec the workers get (the workload prepares what they share)."""
    problems = []
    if spec.family not in WORKLOADS:
        raise BenchmarkError(f"unknown family {spec.family!r}; allowed: {', '.join(WORKLOADS)}")
    counts = {"iters": iters, "warmup": warmup, "batch_size": spec.batch_size, "seed": spec.seed}
    if threads is not None:  # None: torch's default
        counts["threads"] = threads
    for name, value in counts.items():  # the bounds of fastpipes/bounds.py, as the CLI's
        try:
            check_int(name, value)
        except InputError as e:
            problems.append(str(e))
    if max_time is not None and not (math.isfinite(max_time) and max_time > 0):
        problems.append(f"max_time must be a finite number of seconds > 0, got {max_time}")
    why = check_device(spec.device)
    if why:
        problems.append(why)
    if problems:
        raise BenchmarkError("; ".join(problems))
    # the workload checks its own options and model here (BenchmarkError)
    workload = get_workload(spec)
    if baseline and workload.build_dtype != "float32":
        raise BenchmarkError(f"the workload is built in {workload.build_dtype}, so its eager run "
                             "would not be an FP32 baseline; add --no-baseline (baseline=False), "
                             "or drop the dtype option")
    return workload.prepare()


def _jobs(planned: list[Planned], job: BenchJob, wd: Path, overrides: list[str],
          warm_start: bool) -> tuple[list[BenchJob], dict[int, BenchJob]]:
    """One job per configuration (from `job`'s settings), and the second-start jobs of the
    compiling recipes."""
    auto_overrides = [o for o in overrides if o.startswith(f"{AUTO}.")]  # e.g. auto.budget_s
    jobs = [job.but(kind="config", tag=f"c{i}", baseline=p.baseline, recipe=p.recipe,
                    cache=str(wd / f"cache-c{i}"),
                    auto_overrides=auto_overrides if p.recipe == AUTO else [])
            for i, p in enumerate(planned)]
    warm = {i: jobs[i].but(kind="warm", tag=f"c{i}-warm") for i, p in enumerate(planned)
            if p.run and warm_start and compiles(p.recipe)}
    return jobs, warm


def _execute(planned, configs, jobs, warm, wd, max_time, limits_job: BenchJob | None,
             progress) -> tuple[dict | None, float | None, dict]:
    """Run the workers in turn, filling `configs`; (limits, FP32 FLOPs, workload info)."""
    to_run = [i for i, p in enumerate(planned) if p.run]
    limits_result, flops, workload_info = None, None, {}
    flops_by_group = None
    total = (sum(jobs[i].steps for i in to_run) + (limits_job.steps if limits_job else 0)
             + sum(j.steps for j in warm.values()))
    with make_progress(progress, total) as prog:
        if limits_job:
            prog.start("machine limits", 1)
            res = run_worker(limits_job, wd, max_time, prog.event)
            limits_result = res.get("limits")
            prog.finish("machine limits", res["status"])
        for i in to_run:
            c, job = configs[i], jobs[i]
            prog.start(c.name, job.steps)
            try:
                res = run_worker(job, wd, max_time, prog.event)
            except KeyboardInterrupt as e:
                c.status = CUT
                c.reason = f"interrupted ({'SIGTERM' if isinstance(e, Interrupted) else 'Ctrl-C'})"
                for later in to_run[to_run.index(i) + 1:]:
                    configs[later].reason = "not run: the benchmark was interrupted"
                raise
            _fill(c, res)
            if c.baseline:
                flops, flops_by_group = res.get("flops"), res.get("flops_by_group")
            workload_info = workload_info or res.get("workload") or {}
            prog.finish(c.name, c.status)
            if i in warm and c.ok:
                prog.start(f"{c.name} (second start)", warm[i].steps)
                res = run_worker(warm[i], wd, max_time, prog.event)
                _fill_warm(c, res)
                prog.finish(f"{c.name} (second start)", res["status"])
    if flops_by_group:
        workload_info = dict(workload_info, flops_by_group=flops_by_group)
    return limits_result, flops, workload_info


def run_benchmark(
    spec: WorkloadSpec, recipes: Iterable[str | Path | Mapping[str, Any]] | None = None, *,
    overrides: Iterable[str] = (), iters: int = 5, warmup: int = 1, threads: int | None = None,
    max_time: float | None = None, run_all: bool = False, warm_start: bool = True,
    limits: bool = True, limits_quick: bool = False, baseline: bool = True,
    profile: bool = False, progress: bool = True, command: str = "",
    workdir: str | Path | None = None,
) -> BenchResult:
    """Benchmark the FP32 eager baseline and `recipes` on `spec`'s workload.

    `recipes`: built-in names, YAML paths or mappings (None: the family's built-in recipes
    whose ``requires`` this machine meets). `overrides` (``["attention.block_size=128"]``)
    apply to every recipe. Each configuration runs in a fresh process, killed after
    `max_time` seconds (start-up included). Never raises for a failing configuration: it is
    reported as failed or cut and the others still run. Ctrl-C or SIGTERM returns the rows
    measured so far, with ``interrupted`` set.

    Every configuration starts with empty fastpipes and Inductor caches of its own, so its
    compile time is a cold start. With `warm_start`, a recipe that compiles then starts a
    second process on the caches the first one left (build, accelerate, first call): the
    row's ``compile_warm_s`` is what a user's next run pays. With `profile`, each row
    profiles one more call (bench/profile.py: where its time goes).

    ``baseline=False`` skips the FP32 eager run, for models whose FP32 form does not fit in
    memory (the llama-2-7b shape): rows then have times but no speedup and no fidelity.
    A workload built in another dtype (its ``build_dtype``, e.g. Llama with
    ``options={"dtype": "bfloat16"}``) needs it, so nothing is labelled FP32 that is not.

    >>> from fastpipes.bench import WorkloadSpec, run_benchmark
    >>> r = run_benchmark(WorkloadSpec("toy", size="tiny"), [{"memory_format": {}}],
    ...                   iters=3, progress=False)                        # doctest: +SKIP
    >>> r.config("custom").speedup                                      # doctest: +SKIP
    """
    spec = check_arguments(spec, iters, warmup, threads, max_time, baseline)
    info, threads, overrides = detect(), threads or torch.get_num_threads(), list(overrides)
    planned = plan(spec.family, recipes, overrides, run_all, info, spec.device, baseline,
                   workload=spec.options.get("workload"))
    configs = [_row(p) for p in planned]
    wd, owned = make_workdir(workdir)
    Path(wd / "reference.pt").unlink(missing_ok=True)  # only this run's baseline is a reference
    job = BenchJob(kind="config", tag="", spec=spec, threads=threads, iters=iters,
                   warmup=warmup, profile=profile, reference=str(wd / "reference.pt"))
    jobs, warm = _jobs(planned, job, wd, overrides, warm_start)
    limits_job = (job.but(kind="limits", tag="limits", limits_quick=limits_quick) if limits
                  else None)
    load = load_per_cpu()  # before our own workers load the machine
    measured, interrupted = _interruptible(lambda: _execute(
        planned, configs, jobs, warm, wd, max_time, limits_job, progress), wd, owned)
    limits_result, flops, workload_info = measured or (None, None, {})
    result = BenchResult(
        workload=dict(workload_info or _describe(spec), flops=flops, spec=asdict(spec)),
        settings={"iters": iters, "warmup": warmup, "threads": threads, "max_time_s": max_time,
                  "device": spec.device, "overrides": overrides, "profile": profile},
        machine=info.to_dict(), limits=limits_result, configs=configs,
        torch_version=torch.__version__, fastpipes_version=__version__,
        command=command or shlex.join(sys.argv), interrupted=interrupted,
        date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    _derive(result, flops, load, info.tier, threads)
    return result


def _row(p: Planned) -> ConfigResult:
    """A planned configuration's row, before it runs."""
    return ConfigResult(p.name, recipe_source=shown_source(p.source), baseline=p.baseline,
                        status=NOT_RUN if not p.failed else FAILED, reason=p.reason,
                        hardware_note=p.hardware_note, precision_class=p.precision_class)


def _interruptible(run: Callable[[], Any], wd: Path, owned: bool) -> tuple[Any, bool]:
    """(what `run()` returned, or None if Ctrl-C or SIGTERM stopped it; whether they did).
    SIGTERM raises as Ctrl-C does while it runs; an owned work directory is removed after."""
    on_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_interrupted) if on_main else None
    try:
        return run(), False
    except KeyboardInterrupt:
        return None, True
    finally:
        if on_main:
            signal.signal(signal.SIGTERM, previous)
        if owned:
            remove_workdir(wd)


def _raise_interrupted(signum, frame) -> None:
    raise Interrupted(f"signal {signum}")


# ---- assembling the result ----------------------------------------------------------------

def _derive(result: BenchResult, flops: float | None, load: float | None, tier: str,
            threads: int) -> None:
    """Per row: unit, speedup over the baseline and shares of the measured machine limits;
    then how noisy the run was."""
    unit, bound = result.workload.get("unit", "items"), result.workload.get("bound", "compute")
    base = result.configs[0]
    base_median = base.latency_s["median"] if base.ok else None
    result.noise = noise_verdict(base.latency_s if base.ok else None, result.limits, tier,
                                 threads, load)
    for c in result.configs:
        c.unit = unit
        if not c.ok:
            continue
        median = c.latency_s["median"]
        c.throughput = c.items / median if c.items else None
        if base_median:
            c.speedup = base_median / median
        if flops:
            c.achieved_gflops = flops / median / 1e9
            c.gflops_share = share_of(result.limits, c.precision_class, c.achieved_gflops)
        if bound == "memory" and c.bytes_per_item and c.throughput:
            c.achieved_gbps = c.bytes_per_item * c.throughput / 1e9
            bw = (result.limits or {}).get("bandwidth_gbps")
            c.bandwidth_share = c.achieved_gbps / bw if bw else None


def _fill(c: ConfigResult, res: dict) -> None:
    c.status = RunStatus(res["status"])
    c.reason = res.get("reason", c.reason) or c.reason
    for key in ("build_s", "first_call_s", "compile_s", "latency_s", "items", "bytes_per_item",
                "peak_rss_mb", "cuda_max_allocated_mb", "fidelity", "report", "wall_s",
                "traceback", "precision_class", "profile"):
        if res.get(key) is not None:
            setattr(c, key, res[key])
    c.extra = {k: float(v) for k, v in (res.get("extra") or {}).items()}
    if res.get("accelerate_s") is not None:
        c.extra["accelerate_s"] = float(res["accelerate_s"])
    for k, v in (res.get("cache_counts") or {}).items():
        c.extra[k] = float(v)
    auto = ((res.get("report") or {}).get("extra") or {}).get("auto")
    if auto:  # say what auto chose, and from what
        tried = ", ".join(f"{t['recipe']}"
                          + (f" ({t['precision_class']})" if t.get("precision_class") else "")
                          + f" {t['status']}"
                          + (f" {t['speedup']:.2f}x" if t.get("speedup") else "")
                          for t in auto["trials"])
        c.reason = "; ".join(x for x in (c.reason, f"auto chose {auto['winner'] or 'FP32'} "
                                                   f"(tried: {tried})") if x)
    notes = res.get("notes") or []
    if notes:
        c.reason = "; ".join(([c.reason] if c.reason else []) + notes)


def _fill_warm(c: ConfigResult, res: dict) -> None:
    """The second start of `c`: its compile time on the caches the first start left."""
    if res["status"] != "ok":
        note = f"second start {res['status']}: {res.get('reason', '')}".strip()
        c.reason = "; ".join(x for x in (c.reason, note) if x)
        return
    c.compile_warm_s = max(0.0, res["first_call_s"] - c.latency_s["median"])
    c.extra["warm_first_call_s"] = float(res["first_call_s"])
    if res.get("accelerate_s") is not None:
        c.extra["warm_accelerate_s"] = float(res["accelerate_s"])
    for k, v in (res.get("cache_counts") or {}).items():
        c.extra[f"warm_{k}"] = float(v)


def _describe(spec: WorkloadSpec) -> dict:
    """Family, one-line description, unit and bound: cheap (constructs, does not build)."""
    try:
        wl = get_workload(spec)
        return {"family": spec.family, "description": wl.describe(), "unit": wl.unit,
                "bound": wl.bound}
    except Exception as e:  # noqa: BLE001  (the workers already reported the real error)
        return {"family": spec.family, "description": f"(cannot describe: {e})", "unit": "items",
                "bound": "compute"}
