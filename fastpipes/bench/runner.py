"""run_benchmark(): the FP32 eager baseline and each recipe, each in its own fresh process.

The parent plans (which recipes, validated before anything is built), starts one worker
process per configuration in turn (``python -m fastpipes.bench.worker``), shows progress,
kills a worker that exceeds ``max_time``, and derives speedup and machine-limit shares.
It builds no model itself.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from fastpipes.bench.progress import make_progress
from fastpipes.bench.result import (BASELINE, CUT, FAILED, NOT_RUN, BenchResult,
                                    ConfigResult)
from fastpipes.bench.workload import WorkloadSpec
from fastpipes.errors import BenchmarkError, FastpipesError

AUTO = "auto"  # --recipes auto: accelerate(pipe, "auto") searched inside the worker


@dataclass
class Planned:
    """A configuration the parent decided on; `recipe` is the validated, resolved mapping."""

    name: str
    recipe: dict | str | None = None  # None: the FP32 eager baseline; "auto"
    source: str | None = None
    run: bool = True
    reason: str = ""  # why it is not run, or failed before running
    hardware_note: str = ""
    failed: bool = False  # could not even be loaded
    baseline: bool = False


def _family_matches(recipe_family: str, family: str) -> bool:
    from fastpipes.recipe.schema import Family

    if family in Family.__members__:
        return recipe_family == family
    return recipe_family == "any"  # e.g. the toy workload: generic recipes only


def _plan_one(spec: Any, family: str, overrides: list[str], info: Any, device: str,
              named: bool) -> Planned:
    from fastpipes.hardware import unmet_requirements
    from fastpipes.recipe import load_recipe

    if spec == AUTO:
        return Planned(AUTO, recipe=AUTO, source="recipe='auto': the fastest candidate that "
                                                 "passes this benchmark's fidelity bars")
    label = spec.get("name", "custom") if isinstance(spec, Mapping) else Path(str(spec)).stem
    try:
        rec = load_recipe(spec, overrides)
    except FastpipesError as e:
        return Planned(label, source=str(spec) if not isinstance(spec, Mapping) else "<api>",
                       run=False, failed=True, reason=f"cannot load recipe: {e}")
    if rec.family.value not in ("any", family):
        return Planned(rec.name, source=rec.source, run=False, failed=True,
                       reason=f"recipe {rec.name!r} is for {rec.family.value} pipelines, not "
                              f"{family}")
    unmet = unmet_requirements(rec.requires, info, device)
    note = "; ".join(unmet)
    planned = Planned(rec.name, recipe=rec.raw, source=rec.source, hardware_note=note)
    if unmet and not named:
        planned.run = False
        planned.reason = f"not run: {note} (name it in --recipes or pass --all to run it)"
    return planned


def plan(family: str, recipes: Iterable[Any] | None, overrides: Iterable[str] = (),
         run_all: bool = False, info: Any = None, device: str = "cpu",
         baseline: bool = True) -> list[Planned]:
    """The baseline plus the recipes to run, in order (the baseline row stays, marked not
    run, when `baseline` is False).

    Named recipes always run (marked when this machine misses their ``requires``). With no
    names: every built-in recipe of `family`; those whose ``requires`` are unmet are listed
    as not run unless `run_all`.
    """
    from fastpipes.hardware import detect
    from fastpipes.recipe import available, load_recipe

    info = info or detect()
    overrides = list(overrides)
    out = [Planned(BASELINE, baseline=True) if baseline else Planned(
        BASELINE, baseline=True, run=False,
        reason="not run (--no-baseline): no speedup or fidelity for the other rows")]
    if recipes:
        out += [_plan_one(r, family, overrides, info, device, named=True) for r in recipes]
    else:
        for name, path in sorted(available().items()):
            try:
                rec_family = load_recipe(path).family.value
            except FastpipesError:
                continue  # a broken unrelated recipe must not stop this benchmark
            if _family_matches(rec_family, family):
                out.append(_plan_one(str(path), family, overrides, info, device,
                                      named=run_all))
    seen: dict[str, int] = {}
    for p in out:  # one recipe twice (e.g. a YAML and its copy) must stay two rows
        seen[p.name] = seen.get(p.name, 0) + 1
        if seen[p.name] > 1:
            p.name = f"{p.name}#{seen[p.name]}"
    return out


def _worker_env(cache: str | None = None) -> dict[str, str]:
    # the worker must import this very fastpipes, installed or not
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    if cache:  # this configuration's own caches: its first start is a cold one
        env["FASTPIPES_CACHE_DIR"] = cache
        env["TORCHINDUCTOR_CACHE_DIR"] = str(Path(cache) / "inductor")
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(
        os.pathsep) if p])
    return env


def _kill(proc: subprocess.Popen) -> None:
    """Kill the worker and whatever it started (Inductor compile workers): its own group."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.wait()


def _read_events(path: Path, offset: int) -> tuple[list[dict], int]:
    if not path.exists():
        return [], offset
    with open(path) as f:
        f.seek(offset)
        text = f.read()
    complete = text[: text.rfind("\n") + 1]
    events = [json.loads(line) for line in complete.splitlines() if line.strip()]
    return events, offset + len(complete)


def _run_worker(job: dict, workdir: Path, max_time: float | None, on_event) -> dict:
    """Run one job in a fresh process; the result dict (status ok | failed | cut)."""
    tag = job["tag"]
    job["events"] = str(workdir / f"{tag}.events.jsonl")
    job["result"] = str(workdir / f"{tag}.result.json")
    for stale in (job["events"], job["result"]):  # a reused workdir must not feed old files
        Path(stale).unlink(missing_ok=True)
    job_path = workdir / f"{tag}.job.json"
    job_path.write_text(json.dumps(job))
    log_path = workdir / f"{tag}.log"
    t0 = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "fastpipes.bench.worker", str(job_path)],
                                stdout=log, stderr=subprocess.STDOUT,
                                env=_worker_env(job.get("cache")),
                                start_new_session=True)
        offset, cut, phase = 0, False, "start-up"

        def drain() -> str:
            nonlocal offset
            events, offset = _read_events(Path(job["events"]), offset)
            for ev in events:
                on_event(ev)
            return events[-1]["phase"] if events else phase

        try:
            while proc.poll() is None:
                phase = drain()
                if max_time is not None and time.monotonic() - t0 > max_time:
                    _kill(proc)
                    cut = True
                    break
                time.sleep(0.1)
        finally:  # Ctrl-C or an error here: never leave a worker running
            if proc.poll() is None:
                _kill(proc)
        phase = drain()
    wall = time.monotonic() - t0
    result_path = Path(job["result"])
    if cut:
        return {"status": CUT, "wall_s": wall,
                "reason": f"cut: exceeded --max-time {max_time:g} s (during {phase}); "
                          "the worker process was killed"}
    if not result_path.exists():
        tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
        return {"status": FAILED, "wall_s": wall,
                "reason": f"worker died with exit code {proc.returncode}: " + " | ".join(tail)}
    result = json.loads(result_path.read_text())
    result["wall_s"] = wall
    return result


def _steps(job: dict) -> int:
    if job["kind"] == "warm":
        return 3
    return 3 + (job["recipe"] is not None) + job["warmup"] + job["iters"]


def _compiles(recipe: dict | str | None) -> bool:
    """Whether a second start can be faster: the recipe compiles (a compile section, or a
    compiled decode step), or is auto."""
    if recipe == AUTO:
        return True
    if not isinstance(recipe, Mapping):
        return False
    compile_ = recipe.get("compile")
    kv = recipe.get("kv_cache") or {}
    return ((isinstance(compile_, Mapping) and compile_.get("enabled", True))
            or bool(kv.get("enabled", True) and kv.get("compile_decode")))


def _derive(result: BenchResult, flops: float | None, bound: str) -> None:
    """Speedup over the baseline and shares of the measured machine limits, per row."""
    base = result.configs[0]
    base_median = base.latency_s["median"] if base.ok else None
    lim = result.limits or {}
    for c in result.configs:
        if not c.ok:
            continue
        median = c.latency_s["median"]
        c.throughput = c.items / median if c.items else None
        if base_median:
            c.speedup = base_median / median
        if flops:
            c.achieved_gflops = flops / median / 1e9
            if lim.get("gemm_gflops"):
                c.gflops_share = c.achieved_gflops / lim["gemm_gflops"]
        if bound == "memory" and c.bytes_per_item and c.throughput:
            c.achieved_gbps = c.bytes_per_item * c.throughput / 1e9
            if lim.get("bandwidth_gbps"):
                c.bandwidth_share = c.achieved_gbps / lim["bandwidth_gbps"]


def run_benchmark(
    spec: WorkloadSpec,
    recipes: Iterable[str | Path | Mapping[str, Any]] | None = None,
    *,
    overrides: Iterable[str] = (),
    iters: int = 5,
    warmup: int = 1,
    threads: int | None = None,
    max_time: float | None = None,
    run_all: bool = False,
    warm_start: bool = True,
    limits: bool = True,
    limits_quick: bool = False,
    baseline: bool = True,
    progress: bool = True,
    command: str = "",
    workdir: str | Path | None = None,
) -> BenchResult:
    """Benchmark the FP32 eager baseline and `recipes` on `spec`'s workload.

    `recipes`: built-in names, YAML paths or mappings (None: the family's built-in recipes
    whose ``requires`` this machine meets). `overrides` (``["attention.block_size=128"]``)
    apply to every recipe. Each configuration runs in a fresh process, killed after
    `max_time` seconds (start-up included). Never raises for a failing configuration: it is
    reported as failed or cut and the others still run.

    Every configuration starts with empty fastpipes and Inductor caches of its own, so its
    compile time is a cold start. With `warm_start`, a recipe that compiles then starts a
    second process on the caches the first one left (build, accelerate, first call): the
    row's ``compile_warm_s`` is what a user's next run pays.

    ``baseline=False`` skips the FP32 eager run, for models whose FP32 form does not fit in
    memory (the llama-2-7b shape): rows then have times but no speedup and no fidelity.
    A workload built in another dtype (its ``build_dtype``, e.g. Llama with
    ``options={"dtype": "bfloat16"}``) needs it, so nothing is labelled FP32 that is not.

    >>> from fastpipes.bench import WorkloadSpec, run_benchmark
    >>> r = run_benchmark(WorkloadSpec("toy", size="tiny"), [{"memory_format": {}}],
    ...                   iters=3, progress=False)                        # doctest: +SKIP
    >>> r.config("custom").speedup                                      # doctest: +SKIP
    """
    import torch

    import fastpipes
    from fastpipes.bench.workload import WORKLOADS, get_workload
    from fastpipes.hardware import detect

    if spec.family not in WORKLOADS:
        raise BenchmarkError(f"unknown family {spec.family!r}; allowed: {', '.join(WORKLOADS)}")
    if iters < 1 or warmup < 0:
        raise BenchmarkError(f"iters must be >= 1 and warmup >= 0 (got {iters}, {warmup})")
    info = detect()
    threads = threads or torch.get_num_threads()
    overrides = list(overrides)
    # the workload checks its own options here, before any worker starts
    build_dtype = get_workload(spec).build_dtype
    if baseline and build_dtype != "float32":
        raise BenchmarkError(f"the workload is built in {build_dtype}, so its eager run would "
                             "not be an FP32 baseline; add --no-baseline (baseline=False), or "
                             "drop the dtype option")
    planned = plan(spec.family, recipes, overrides, run_all, info, spec.device, baseline)

    tmp = tempfile.TemporaryDirectory(prefix="fastpipes-bench-") if workdir is None else None
    wd = Path(tmp.name if tmp else workdir)
    wd.mkdir(parents=True, exist_ok=True)
    reference = str(wd / "reference.pt")
    Path(reference).unlink(missing_ok=True)  # only this run's baseline is a reference
    base_job = {"spec": asdict(spec), "threads": threads, "iters": iters, "warmup": warmup,
                "device": spec.device, "reference": reference}

    configs = [ConfigResult(p.name, recipe_source=p.source, baseline=p.baseline,
                            status=NOT_RUN if not p.failed else FAILED,
                            reason=p.reason, hardware_note=p.hardware_note)
               for p in planned]
    auto_overrides = [o for o in overrides if o.startswith(f"{AUTO}.")]  # e.g. auto.budget_s
    jobs = [dict(base_job, kind="config", tag=f"c{i}", baseline=c.baseline, recipe=p.recipe,
                 cache=str(wd / f"cache-c{i}"),
                 auto_overrides=auto_overrides if p.recipe == AUTO else [])
            for i, (p, c) in enumerate(zip(planned, configs))]
    to_run = [i for i, p in enumerate(planned) if p.run]
    warm_jobs = {i: dict(jobs[i], kind="warm", tag=f"c{i}-warm") for i in to_run
                 if warm_start and _compiles(planned[i].recipe)}
    for j in jobs + list(warm_jobs.values()):
        j["steps"] = _steps(j)
    limits_result, flops, workload_info = None, None, {}
    try:
        total = (sum(jobs[i]["steps"] for i in to_run) + (1 if limits else 0)
                 + sum(j["steps"] for j in warm_jobs.values()))
        with make_progress(progress, total) as prog:
            if limits:
                prog.start("machine limits", 1)
                res = _run_worker(dict(base_job, kind="limits", tag="limits",
                                       limits_quick=limits_quick), wd, max_time, prog.event)
                limits_result = res.get("limits")
                prog.finish("machine limits", res["status"])
            for i in to_run:
                c, job = configs[i], jobs[i]
                prog.start(c.name, job["steps"])
                res = _run_worker(job, wd, max_time, prog.event)
                _fill(c, res)
                if c.baseline:
                    flops = res.get("flops")
                workload_info = workload_info or res.get("workload") or {}
                prog.finish(c.name, c.status)
                if i in warm_jobs and c.ok:
                    prog.start(f"{c.name} (second start)", warm_jobs[i]["steps"])
                    warm = _run_worker(warm_jobs[i], wd, max_time, prog.event)
                    _fill_warm(c, warm)
                    prog.finish(f"{c.name} (second start)", warm["status"])
        workload_info = workload_info or _describe(spec)
        for c in configs:
            c.unit = workload_info.get("unit", "items")
    finally:
        if tmp is not None:
            tmp.cleanup()
    result = BenchResult(
        workload=dict(workload_info, flops=flops, spec=asdict(spec)),
        settings={"iters": iters, "warmup": warmup, "threads": threads, "max_time_s": max_time,
                  "device": spec.device, "overrides": overrides},
        machine=info.to_dict(), limits=limits_result, configs=configs,
        torch_version=torch.__version__, fastpipes_version=fastpipes.__version__,
        command=command or shlex.join(sys.argv),
        date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )
    _derive(result, flops, workload_info.get("bound", "compute"))
    return result


def _fill(c: ConfigResult, res: dict) -> None:
    c.status = res["status"]
    c.reason = res.get("reason", c.reason) or c.reason
    for key in ("build_s", "first_call_s", "compile_s", "latency_s", "items", "bytes_per_item",
                "peak_rss_mb", "cuda_max_allocated_mb", "fidelity", "report", "wall_s",
                "traceback"):
        if res.get(key) is not None:
            setattr(c, key, res[key])
    c.extra = {k: float(v) for k, v in (res.get("extra") or {}).items()}
    if res.get("accelerate_s") is not None:
        c.extra["accelerate_s"] = float(res["accelerate_s"])
    for k, v in (res.get("cache_counts") or {}).items():
        c.extra[k] = float(v)
    auto = ((res.get("report") or {}).get("extra") or {}).get("auto")
    if auto:  # say what auto chose, and from what
        tried = ", ".join(f"{t['recipe']} {t['status']}" + (f" {t['speedup']:.2f}x"
                                                             if t.get("speedup") else "")
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
    from fastpipes.bench.workload import get_workload

    try:
        wl = get_workload(spec)
        desc = wl.describe()
        return {"family": spec.family, "description": desc, "unit": wl.unit, "bound": wl.bound}
    except Exception as e:  # noqa: BLE001  (the workers already reported the real error)
        return {"family": spec.family, "description": f"(cannot describe: {e})", "unit": "items",
                "bound": "compute"}
