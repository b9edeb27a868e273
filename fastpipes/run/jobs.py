"""The job loop behind ``fastpipes run``: build and accelerate once, then every input, and
survive bad inputs, Ctrl-C and restarts.

A :class:`~fastpipes.run.base.Job` (one subclass per family) says what the inputs are, how
to build the FP32 pipeline, how to turn one input into output files and a record, and how
to gather the records into the family's result file. :func:`run_job` does the rest, the
same way for the local engine and for Ray (:mod:`fastpipes.run.ray_engine`):

- inputs whose ``done`` record is there with the same fingerprint are skipped (resume);
- an input that raises is recorded in ``errors.jsonl`` and the job goes on;
- Ctrl-C (SIGINT) and SIGTERM abandon the current item: what is finished stays finished,
  the summary is written, and the exit status says which signal (130, 143);
- one run at a time per output directory (a lock in ``--out``, see
  :meth:`~fastpipes.run.outdir.OutDir.lock`);
- every file is written atomically (:mod:`fastpipes.run.outdir`);
- a summary (done / skipped / failed, throughput, recipe, start times) ends the run.
"""
from __future__ import annotations

import dataclasses
import json
import signal
import time
from dataclasses import dataclass, field

from fastpipes.bounds import check_float, check_int
from fastpipes.errors import InputError
from fastpipes.hardware import check_device
from fastpipes.run.base import Item, ItemResult, Job, Worker, job_recipe, measured_speedup
from fastpipes.run.outdir import OutDir, atomic_write_lines
from fastpipes.run.progress import JobProgress
from fastpipes.run.signals import Interrupts
from fastpipes.run.ray_engine import run_on_ray

ENGINES = ("local", "ray")


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
    signal: str = ""  # what interrupted it: SIGINT (Ctrl-C) or SIGTERM
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
        if self.interrupted:  # the shell's 128 + signal number
            return 128 + (signal.SIGTERM if self.signal == "SIGTERM" else signal.SIGINT)
        return 1 if self.failed else 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        state = f"interrupted by {self.signal or 'SIGINT'} (rerun the same command to resume)" \
            if self.interrupted else "finished"
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
            wait = f", waited {s['wait_s']:.1f} s for the start lock" \
                if s.get("wait_s", 0) >= 0.1 else ""
            made = f"; {s['items']} item(s)" if "items" in s else ""
            lines.append(f"  start    #{i + 1} ({who}): {s['total_s']:.1f} s (build "
                         f"{s['build_s']:.1f}, accelerate {s['accelerate_s']:.1f}, warm-up "
                         f"{s['warm_up_s']:.1f}){wait}{made}")
        lines += [f"  node     {line}" for line in per_node(self.start)]
        lines += [f"  warning  {w}" for w in self.warnings]
        lines += [f"  wrote    {o}" for o in self.outputs]
        return "\n".join(lines)


def per_node(starts: list[dict]) -> list[str]:
    """'HOST (node ID): N item(s) by K actor(s)' per Ray node, from the actors' starts."""
    nodes: dict[str, list[int]] = {}
    for s in starts:
        if "node" in s and "items" in s:
            nodes.setdefault(s["node"], []).append(s["items"])
    return [f"{node}: {sum(n)} item(s) by {len(n)} actor(s)" for node, n in nodes.items()]


def run_job(job: Job, engine: str = "local", actors: int = 1, cpus_per_actor: float | None = None,
            address: str | None = None, progress: bool = True) -> RunSummary:
    """Run `job` to the end (or to Ctrl-C) and summarise it; see the module docstring.

    >>> summary = run_job(SamJob(out="out", images="pics/", everything=True,
    ...                          model="vit_b", checkpoint="sam_vit_b.pth"))  # doctest: +SKIP
    """
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}; allowed: {', '.join(ENGINES)}")
    check_int("actors", actors)
    if cpus_per_actor is not None:  # None: split this machine's CPUs
        check_float("cpus_per_actor", cpus_per_actor)
    check_int("seed", job.seed, "--seed")
    why = check_device(job.device)  # the one check `fastpipes bench` makes too
    if why:
        raise InputError(f"--device {job.device}: {why}")
    job.check()
    job_recipe(job)  # a bad recipe fails here, before any input is listed or model built
    items = job.items()
    if len({i.key for i in items}) != len(items):  # a bug in a job's items(), not bad input
        raise RuntimeError(f"{job.family} job: two inputs got the same output key")
    out = OutDir(job.out)
    with out.lock(), Interrupts() as signals:
        summary = RunSummary(job.family, str(out.root), engine, len(items))
        try:
            _run(job, out, items, summary, actors, cpus_per_actor, address, progress)
        except KeyboardInterrupt:  # one that came outside the item loop
            summary.interrupted = True
        signals.hold()  # a second signal must not cut the summary short
        if summary.interrupted:
            summary.signal = signals.caught or "SIGINT"
        _finish(job, out, items, summary)
    return summary


def _run(job: Job, out: OutDir, items: list[Item], summary: RunSummary, actors: int,
         cpus_per_actor: float | None, address: str | None, progress: bool) -> None:
    """The items not done yet, locally or on Ray, until the end or an interrupt; counts
    and times go into `summary`."""
    engine = summary.engine
    pending = [i for i in items if out.done_fingerprint(i.key) != i.fingerprint]
    known_bad = [i for i in pending if i.payload.get("error")]
    pending = [i for i in pending if not i.payload.get("error")]
    summary.skipped = len(items) - len(pending) - len(known_bad)
    t0 = time.perf_counter()
    ready: list[float] = []  # perf_counter when each worker / actor was ready

    def started(report: dict, start: dict) -> None:
        if not summary.start:
            summary.recipe = report.get("recipe", "")
            summary.warnings = list(report.get("warnings", []))
            summary.speedup, summary.speedup_source = measured_speedup(report)
        summary.start.append(start)
        # a Ray actor says when it was ready (wall clock); its first result comes later
        late = time.time() - start["ready_at"] if "ready_at" in start else 0.0
        ready.append(time.perf_counter() - max(0.0, late))

    with JobProgress(len(pending) + len(known_bad), job.family, enabled=progress) as bar:
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

        for item in known_bad:  # a bad line or a missing prompt: recorded, no model needed
            take(ItemResult(item.key, item.fingerprint, False, error={
                "type": "InputError", "message": item.payload["error"],
                "input": item.payload.get("name", item.key)}))
        try:
            if pending and engine == "local":
                worker = Worker(job, say=bar.note if progress else None)
                started(worker.report.to_dict(), worker.start)
                for item in pending:
                    take(worker(item))
            elif pending:
                run_on_ray(job, pending, take, started, actors=actors,
                           cpus_per_actor=cpus_per_actor, address=address, say=bar.note,
                           verbose=progress)
        except KeyboardInterrupt:
            summary.interrupted = True
    end = time.perf_counter()
    summary.wall_s = end - t0
    summary.start.sort(key=lambda s: s.get("ready_at", 0.0))  # the first to start first
    if summary.done and ready and end > min(ready):
        summary.items_per_s = summary.done / (end - min(ready))
    if not pending:
        summary.speedup_source = "nothing to run: every input was already done"


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
