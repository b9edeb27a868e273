"""What a ``fastpipes run`` job is made of: its settings (:class:`Job`, one subclass per
family), its inputs (:class:`Item`), and the :class:`Worker` that builds, accelerates and
warms up the pipeline once and then turns one input into one :class:`ItemResult`.

The same Worker runs in the local loop (:func:`fastpipes.run.jobs.run_job`) and inside each
Ray actor (:class:`fastpipes.run.ray_engine.RunActor`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import traceback
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, ContextManager

import torch

from fastpipes.api import accelerate
from fastpipes.bounds import first_nonfinite
from fastpipes.errors import FastpipesError, InputError
from fastpipes.family import FAMILIES, BuildSpec
from fastpipes.progress import heartbeat
from fastpipes.recipe.load import load_recipe
from fastpipes.recipe.schema import GENERIC
from fastpipes.run.outdir import OutDir

if TYPE_CHECKING:
    from fastpipes.run.jobs import RunSummary

@dataclass(frozen=True)
class Item:
    """One input of a job. `payload` is JSON-able (it travels to Ray actors)."""

    key: str  # stable and file-name safe: names the outputs and the resume record
    payload: dict  # with "error": an input known to be bad (recorded as failed, never run)
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


@dataclass(frozen=True)
class Flag:
    """One ``fastpipes run FAMILY`` flag of a family's own, declared next to the job that
    reads it (``Job.FLAGS``); cli/run.py turns each into an argparse argument. The fields are
    argparse's; a `type` that raises InputError makes its message the usage error."""

    name: str  # "--points-per-side"
    help: str = ""
    type: Callable[[str], Any] | None = None
    default: Any = None
    metavar: str | None = None
    required: bool = False
    action: str | None = None  # "store_true" / "store_false" for a switch
    dest: str | None = None  # default: the name without dashes, "-" as "_"

    @property
    def key(self) -> str:
        """Where its value lands (the argparse dest)."""
        return self.dest or self.name.lstrip("-").replace("-", "_")


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
    recipe: str = "auto"  # a built-in name, a YAML path, auto, or none (FP32 eager)
    overrides: tuple[str, ...] = ()  # recipe dotlist, e.g. ("compile.mode=max-autotune",)
    seed: int = 0
    device: str = "cpu"

    family: ClassVar[str] = ""
    result_file: ClassVar[str] = ""  # what finalize() writes, for the summary
    # fields that say where the inputs are: each item's payload holds what was read there
    input_fields: ClassVar[tuple[str, ...]] = ()
    # the command line (``fastpipes run FAMILY``): what it does (its --help description),
    # what --model means, and the family's own flags; the common ones are cli/run.py's
    SUMMARY: ClassVar[str] = ""
    MODEL_HELP: ClassVar[str] = ""
    FLAGS: ClassVar[tuple[Flag, ...]] = ()

    @classmethod
    def run_cli(cls, flags: dict[str, Any], common: dict[str, Any]) -> "RunSummary":
        """Run the job the command line asks for: `flags` holds the values of :data:`FLAGS`
        by key, `common` the settings every run command has (out, model, recipe, engine...)."""
        raise NotImplementedError

    # -- what a family defines ----------------------------------------------------------
    def check(self) -> None:
        """Raise InputError for settings that cannot work, before anything is built."""

    def items(self) -> list[Item]:
        raise NotImplementedError

    def build(self) -> Any:
        """The FP32 pipeline (what process() calls)."""
        raise NotImplementedError

    def build_pipeline(self, **spec: Any) -> Any:
        """The family's FP32 pipeline from its one builder (fastpipes/family.py), made on the
        job's device; `spec`: the other BuildSpec fields (model, size, seed, checkpoint...)."""
        return FAMILIES.get(self.family).build(BuildSpec(device=self.device, **spec))

    def target(self, pipe: Any) -> Any:
        """What accelerate() is given (default: the pipeline itself)."""
        return pipe

    def auto_overrides(self) -> list[str]:
        """The overrides recipe="auto" gets: the job's own (auto.* settings) and what the
        job rules out (default: nothing more)."""
        return list(self.overrides)

    def modules(self, pipe: Any) -> dict[str, Any]:
        """The pipeline's torch modules by name, whose weights are checked finite after
        loading (default: what accelerate() is given, when that is a module)."""
        target = self.target(pipe)
        return {"": target} if isinstance(target, torch.nn.Module) else {}

    def check_weights(self, pipe: Any) -> None:
        """InputError naming the first weight with a NaN or an infinity: a corrupt
        checkpoint is refused before it makes noise (random weights are not checked)."""
        if self.random_weights:
            return
        for prefix, module in self.modules(pipe).items():
            named = ((f"{prefix}.{k}" if prefix else k, t)
                     for k, t in module.state_dict(keep_vars=True).items())
            bad = first_nonfinite(named)
            if bad:
                source = f"--checkpoint {self.checkpoint}" if self.checkpoint else \
                    f"--model {self.model}"
                raise InputError(f"{source}: weight {bad!r} holds NaN or infinite values; "
                                 "the checkpoint is corrupt (or was saved from a diverged "
                                 "model). Nothing was run")

    def warm_up(self, pipe: Any) -> None:
        """One call on made-up input, so compilation happens before the first real item."""

    def process(self, pipe: Any, item: Item) -> tuple[dict[str, bytes], dict]:
        """(files, record) for one input; raise for a bad input."""
        raise NotImplementedError

    def finalize(self, out: OutDir, records: Any) -> None:
        """Gather the done records (an iterator, in input order) into the result file."""

    # -- shared -------------------------------------------------------------------------
    def identity(self) -> dict:
        """Settings that decide the outputs (not where inputs and outputs are, nor how fast
        they come: a recipe is an implementation choice, and resuming with another one is
        allowed)."""
        skip = {"out", "recipe", "overrides", "device", *self.input_fields}
        ident = {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}
        for k in ("model", "checkpoint"):  # '~/m' and '/home/u/m' are the same model
            v = ident.get(k)
            if isinstance(v, str) and (v.startswith(("~", ".", "/")) or Path(v).exists()):
                ident[k] = str(Path(v).expanduser().resolve())
        return ident

    def fingerprint(self, payload: dict) -> str:
        blob = json.dumps({"job": self.identity(), "item": payload}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def make_item(self, key: str, payload: dict) -> Item:
        return Item(key, payload, self.fingerprint(payload))

    def check_model(self, shapes: tuple[str, ...], what: str) -> None:
        """--random-weights takes a shape name; otherwise --model must be a local path."""
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


def job_recipe(job: Job) -> Any:
    """What accelerate() gets for `job.recipe`: "auto", or the loaded and validated Recipe
    ("none": an empty one, FP32 eager). Called before any model is built, so a typo costs
    nothing."""
    if job.recipe == "auto":
        if job.overrides:  # only auto.* settings make sense here; checked the same way
            load_recipe({"name": "auto", "auto": {}}, list(job.overrides))
        return "auto"
    if job.recipe == "none":
        if job.overrides:
            raise InputError("--recipe none applies nothing, so --set has nothing to change")
        return load_recipe({"name": "none (FP32 eager)", "family": job.family})
    rec = load_recipe(job.recipe, list(job.overrides))
    if rec.family not in (GENERIC, job.family):
        raise InputError(f"recipe {rec.name!r} is for {rec.family} pipelines, not "
                         f"{job.family}; pick a {job.family} or generic recipe "
                         "(fastpipes recipes list), or none for FP32 eager")
    return rec


class Worker:
    """A job's pipeline, built, accelerated and warmed up once; then one call per item.

    What the local engine holds, and what each Ray actor holds
    (:class:`fastpipes.run.ray_engine.RunActor`).
    """

    def __init__(self, job: Job, say: Callable[[str], None] | None = None,
                 gate: Callable[[], ContextManager] | None = None, verbose: bool | None = None):
        """`gate` (Ray actors: a file lock in the shared cache) is held around accelerate
        and warm-up, so one process compiles while the others wait and then start warm.
        `say` gets a line as each step starts. `verbose` (default: whether there is a `say`):
        a heartbeat says every 10 s which step runs, and accelerate() is verbose too."""
        verbose = say is not None if verbose is None else verbose
        say = say or (lambda text: None)

        def step(text: str):  # said now, and again every 10 s while it lasts
            say(text)
            return heartbeat(f"{job.family} start", text, enabled=verbose)

        self.job = job
        t0 = time.perf_counter()
        with step(f"building the {job.family} pipeline ({job.model})"):
            self.pipe = job.build()
            job.check_weights(self.pipe)
        t1 = time.perf_counter()
        with (gate or nullcontext)():
            t2 = time.perf_counter()
            with step(f"accelerating with recipe {job.recipe!r}"):
                recipe = job_recipe(job)
                self.report = accelerate(job.target(self.pipe), recipe,
                                         job.auto_overrides() if job.recipe == "auto" else None,
                                         verbose=verbose)
            t3 = time.perf_counter()
            with step("warming up (a compiling recipe compiles here)"):
                job.warm_up(self.pipe)
            t4 = time.perf_counter()
        self.start = {"build_s": t1 - t0, "accelerate_s": t3 - t2, "warm_up_s": t4 - t3,
                      "total_s": (t4 - t0) - (t2 - t1), "wait_s": t2 - t1}

    def __call__(self, item: Item) -> ItemResult:
        t0 = time.perf_counter()
        try:
            files, record = self.job.process(self.pipe, item)
        except (KeyboardInterrupt, SystemExit, MemoryError):
            raise
        except Exception as e:  # a bad input must not end the job: record it, go on
            error = {"type": type(e).__name__, "message": str(e),
                     "input": item.payload.get("name", item.key)}
            if not isinstance(e, FastpipesError):  # not a known bad input: say where it broke
                frame = traceback.extract_tb(e.__traceback__)[-1]
                error["where"] = f"{frame.filename}:{frame.lineno} in {frame.name}"
            return ItemResult(item.key, item.fingerprint, False, error=error,
                              seconds=time.perf_counter() - t0)
        secs = time.perf_counter() - t0
        return ItemResult(item.key, item.fingerprint, True, files,
                          {"key": item.key, **record, "seconds": record.get("seconds", secs)},
                          seconds=secs)


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
