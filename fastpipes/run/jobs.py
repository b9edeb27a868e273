"""The job loop behind ``fastpipes run``: build and accelerate once, then every input, and
survive bad inputs, Ctrl-C and restarts.

A :class:`Job` (one subclass per family) says what the inputs are, how to build the FP32
pipeline, how to turn one input into output files and a record, and how to gather the
records into the family's result file. :func:`run_job` does the rest, the same way for
the local engine and for Ray (:mod:`fastpipes.run.ray_engine`):

- inputs whose ``done`` record is there with the same fingerprint are skipped (resume);
- an input that raises is recorded in ``errors.jsonl`` and the job goes on;
- Ctrl-C stops after the current item: what is finished stays finished;
- every file is written atomically (:mod:`fastpipes.run.outdir`);
- a summary (done / skipped / failed, throughput, recipe, start times) ends the run.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, ClassVar

from fastpipes.api import accelerate
from fastpipes.errors import FastpipesError, InputError
from fastpipes.recipe.load import load_recipe
from fastpipes.recipe.schema import Family
from fastpipes.run.outdir import OutDir, atomic_write_lines
from fastpipes.run.progress import JobProgress

ENGINES = ("local", "ray")


@dataclass(frozen=True)
class Item:
    """One input of a job. `payload` is JSON-able (it travels to Ray actors)."""

    key: str  # stable and file-name safe: names the outputs and the resume record
    payload: dict
    fingerprint: str = ""  # hash of payload + the job's output-relevant settings


@dataclass
class ItemResult:
    key: str
    fingerprint: str
    ok: bool
    files: dict[str, bytes] = field(default_factory=dict)  # path under --out -> content
    record: dict = field(default_factory=dict)  # gathered by Job.finalize
    error: dict = field(default_factory=dict)  # {"type", "message", "input"}
    seconds: float = 0.0


@dataclass(frozen=True, kw_only=True)
class Job:
    """Settings every ``fastpipes run`` job has; families add their inputs and options.

    Frozen and plain-valued: a Job is pickled to Ray actors, and its output-relevant
    fields (:meth:`identity`) are part of every item's fingerprint.
    """

    out: str
    model: str | None = None  # SAM: vit_b|vit_l|vit_h; SDXL/Llama: a local directory
    checkpoint: str | None = None
    random_weights: bool = False  # seeded random weights at `model`'s shape: for trying out
    recipe: str = "auto"  # a built-in name, a YAML path, or auto
    overrides: tuple[str, ...] = ()  # recipe dotlist, e.g. ("compile.mode=max-autotune",)
    seed: int = 0
    device: str = "cpu"

    family: ClassVar[str] = ""
    result_file: ClassVar[str] = ""  # what finalize() writes, for the summary

    # -- what a family defines ----------------------------------------------------------
    def check(self) -> None:
        """Raise InputError for settings that cannot work, before anything is built."""

    def items(self) -> list[Item]:
        raise NotImplementedError

    def build(self) -> Any:
        """The FP32 pipeline (what process() calls)."""
        raise NotImplementedError

    def target(self, pipe: Any) -> Any:
        """What accelerate() is given (default: the pipeline itself)."""
        return pipe

    def warm_up(self, pipe: Any) -> None:
        """One call on made-up input, so compilation happens before the first real item."""

    def process(self, pipe: Any, item: Item) -> tuple[dict[str, bytes], dict]:
        """(files, record) for one input; raise for a bad input."""
        raise NotImplementedError

    def finalize(self, out: OutDir, records: Any) -> None:
        """Gather the done records (an iterator, in input order) into the result file."""

    # -- shared -------------------------------------------------------------------------
    def identity(self) -> dict:
        """Settings that decide the outputs (not where they go or how fast they come)."""
        skip = {"out", "recipe", "overrides", "device"}
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}

    def fingerprint(self, payload: dict) -> str:
        blob = json.dumps({"job": self.identity(), "item": payload}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def make_item(self, key: str, payload: dict) -> Item:
        return Item(key, payload, self.fingerprint(payload))

    def check_model(self, shapes: tuple[str, ...], what: str) -> None:
        """--random-weights takes a shape name; otherwise --model must be a local path."""
        from pathlib import Path

        if self.random_weights:
            if self.model not in shapes:
                raise InputError(f"--random-weights builds a {self.family} model at a known "
                                 f"shape: --model must be one of {', '.join(shapes)}, "
                                 f"got {self.model!r}")
        elif not self.model or not Path(self.model).expanduser().is_dir():
            raise InputError(f"{self.family} needs --model DIR ({what}), got {self.model!r}; "
                             "or --random-weights --model SHAPE to try it with random weights")
        if self.checkpoint:
            raise InputError(f"--checkpoint is for SAM; for {self.family} give the local "
                             "model directory with --model")


def check_recipe(job: Job) -> None:
    """Load and validate the recipe before any model is built (auto: nothing to check)."""
    if job.recipe == "auto":
        if job.overrides:
            load_recipe({"name": "auto", "auto": {}}, list(job.overrides))
        return
    rec = load_recipe(job.recipe, list(job.overrides))
    if rec.family not in (Family.any, Family(job.family)):
        raise InputError(f"recipe {rec.name!r} is for {rec.family.value} pipelines, not "
                         f"{job.family}; pick a {job.family} or family 'any' recipe "
                         "(fastpipes recipes list)")


class Worker:
    """A job's pipeline, built, accelerated and warmed up once; then one call per item.

    What the local engine holds, and what each Ray actor holds
    (:class:`fastpipes.run.ray_engine.RunActor`).
    """

    def __init__(self, job: Job, say=None):
        say = say or (lambda text: None)
        self.job = job
        t0 = time.perf_counter()
        say(f"building the {job.family} pipeline ({job.model})")
        self.pipe = job.build()
        t1 = time.perf_counter()
        say(f"accelerating with recipe {job.recipe!r}")
        recipe = job.recipe if job.recipe == "auto" else load_recipe(job.recipe,
                                                                     list(job.overrides))
        overrides = list(job.overrides) if job.recipe == "auto" else None
        self.report = accelerate(job.target(self.pipe), recipe, overrides)
        t2 = time.perf_counter()
        say("warming up (a compiling recipe compiles here)")
        job.warm_up(self.pipe)
        t3 = time.perf_counter()
        self.start = {"build_s": t1 - t0, "accelerate_s": t2 - t1, "warm_up_s": t3 - t2,
                      "total_s": t3 - t0}

    def __call__(self, item: Item) -> ItemResult:
        t0 = time.perf_counter()
        try:
            files, record = self.job.process(self.pipe, item)
        except (KeyboardInterrupt, SystemExit, MemoryError):
            raise
        except Exception as e:  # a bad input must not end the job: record it, go on
            where = "" if isinstance(e, FastpipesError) else \
                traceback.format_exception_only(type(e), e)[-1].strip()
            return ItemResult(item.key, item.fingerprint, False,
                              error={"type": type(e).__name__, "message": str(e),
                                     "input": item.payload.get("name", item.key),
                                     **({"detail": where} if where else {})},
                              seconds=time.perf_counter() - t0)
        return ItemResult(item.key, item.fingerprint, True, files,
                          {"key": item.key, **record}, seconds=time.perf_counter() - t0)


def measured_speedup(report: dict) -> tuple[float | None, str]:
    """(speedup over FP32 eager measured on this machine, where it comes from) if known:
    recipe="auto" measures its candidates on this pipeline; a named recipe is not timed.
    `report` is ``Report.to_dict()``."""
    auto = (report.get("extra") or {}).get("auto")
    if auto and auto.get("winner"):
        for t in auto.get("trials", []):
            if t.get("recipe") == auto["winner"] and t.get("speedup"):
                cached = " (a cached decision)" if auto.get("cached") else ""
                return float(t["speedup"]), f"recipe='auto' trials on this pipeline{cached}"
    return None, "not measured here (fastpipes bench FAMILY --recipes NAME measures it)"


@dataclass
class RunSummary:
    """What a run did; printed at the end and written to ``summary.json``."""

    family: str
    out: str
    engine: str
    total: int  # inputs in the job
    done: int = 0  # finished by this run
    skipped: int = 0  # finished by an earlier run (same fingerprint)
    failed: int = 0
    interrupted: bool = False
    recipe: str = ""  # what was applied, e.g. "auto -> sam_bf16"
    speedup: float | None = None  # that recipe over FP32 eager, measured on this machine
    speedup_source: str = ""
    wall_s: float = 0.0  # the whole run, start-up included
    items_per_s: float | None = None  # after start-up (every actor's, for Ray)
    start: list[dict] = field(default_factory=list)  # one per worker / actor: its start times
    warnings: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 130 if self.interrupted else (1 if self.failed else 0)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        state = "interrupted (rerun the same command to resume)" if self.interrupted else "finished"
        rate = f"{self.items_per_s:.3g} items/s" if self.items_per_s else "n/a"
        lines = [f"fastpipes run {self.family}: {state}",
                 f"  inputs   {self.total}: {self.done} done, {self.skipped} skipped "
                 f"(already done), {self.failed} failed",
                 f"  time     {self.wall_s:.1f} s in all; throughput {rate} after start-up",
                 f"  recipe   {self.recipe or 'none applied'}"]
        if self.speedup:
            lines.append(f"  speedup  {self.speedup:.2f}x over FP32 eager ({self.speedup_source})")
        else:
            lines.append(f"  speedup  {self.speedup_source}")
        for i, s in enumerate(self.start):
            who = s.get("actor", "local") if self.engine == "ray" else "local"
            wait = f", waited {s['wait_s']:.1f} s for the start lock" if s.get("wait_s") else ""
            lines.append(f"  start    #{i + 1} ({who}): {s['total_s']:.1f} s (build "
                         f"{s['build_s']:.1f}, accelerate {s['accelerate_s']:.1f}, warm-up "
                         f"{s['warm_up_s']:.1f}){wait}")
        lines += [f"  warning  {w}" for w in self.warnings]
        lines += [f"  wrote    {o}" for o in self.outputs]
        return "\n".join(lines)


def run_job(job: Job, engine: str = "local", actors: int = 1, cpus_per_actor: float | None = None,
            address: str | None = None, progress: bool = True) -> RunSummary:
    """Run `job` to the end (or to Ctrl-C) and summarise it; see the module docstring.

    >>> summary = run_job(SamJob(out="out", images="pics/", everything=True,
    ...                          model="vit_b", checkpoint="sam_vit_b.pth"))  # doctest: +SKIP
    """
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}; allowed: {', '.join(ENGINES)}")
    if actors < 1:
        raise InputError(f"actors must be >= 1, got {actors}")
    job.check()
    check_recipe(job)
    items = job.items()
    assert len({i.key for i in items}) == len(items), "item keys must be unique"
    out = OutDir(job.out)
    pending = [i for i in items if out.done_fingerprint(i.key) != i.fingerprint]
    summary = RunSummary(job.family, str(out.root), engine, len(items),
                         skipped=len(items) - len(pending))
    t0 = time.perf_counter()
    ready: list[float] = []  # perf_counter when each worker / actor was ready

    def started(report: dict, start: dict) -> None:
        if not summary.start:
            summary.recipe = report.get("recipe", "")
            summary.warnings = list(report.get("warnings", []))
            summary.speedup, summary.speedup_source = measured_speedup(report)
        summary.start.append(start)
        ready.append(time.perf_counter())

    with JobProgress(len(pending), job.family, enabled=progress) as bar:
        def take(result: ItemResult) -> None:
            if result.ok:
                out.commit(result.key, result.fingerprint, result.files, result.record)
                summary.done += 1
            else:
                out.fail(result.key, result.fingerprint, result.error)
                summary.failed += 1
                bar.note(f"failed: {result.error.get('input')}: {result.error['type']}: "
                         f"{result.error['message']}")
            bar.update(result.ok)

        try:
            if pending and engine == "local":
                worker = Worker(job, say=bar.note)
                started(worker.report.to_dict(), worker.start)
                for item in pending:
                    take(worker(item))
            elif pending:
                from fastpipes.run.ray_engine import run_on_ray

                run_on_ray(job, pending, take, started, actors=actors,
                           cpus_per_actor=cpus_per_actor, address=address, say=bar.note)
        except KeyboardInterrupt:
            summary.interrupted = True
    end = time.perf_counter()
    summary.wall_s = end - t0
    if summary.done and ready and end > ready[0]:
        summary.items_per_s = summary.done / (end - ready[0])
    if not pending:
        summary.speedup_source = "nothing to run: every input was already done"
    _finish(job, out, items, summary)
    return summary


def _finish(job: Job, out: OutDir, items: list[Item], summary: RunSummary) -> None:
    """Gather outputs (also after Ctrl-C: everything finished so far), errors and summary."""
    keys = [(i.key, i.fingerprint) for i in items]
    job.finalize(out, out.records(keys))
    errors = out.errors(k for k, _ in keys)
    atomic_write_lines(out.root / "errors.jsonl", (json.dumps(e) for e in errors))
    summary.outputs = [str(out.root / job.result_file), str(out.root / "errors.jsonl"),
                       str(out.root / "summary.json")]
    out.write_json("summary.json", {**summary.to_dict(), "job": job.identity(),
                                    "requested_recipe": job.recipe,
                                    "overrides": list(job.overrides)})
