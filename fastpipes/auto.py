"""recipe="auto": measure the candidate recipes on the user's own pipeline, keep the fastest
faithful one, and remember the decision on disk.

Candidates are the built-in recipes of the pipeline's family (then generic ones) whose
``requires`` this machine meets and whose precision class is within ``auto.max_class``,
likeliest winner on this CPU tier first (fastpipes.auto_order), plus user recipes named in
``auto.candidates``. Each is applied, timed on the inputs (the
user's ``example_inputs``, or inputs the adapter makes from the model's shapes), compared
with the untouched FP32 output against the family's bars *for its own precision class*,
and undone (accelerate()'s snapshot makes that exact); the winner is then applied for
real. The decision is cached under the fastpipes cache directory, keyed by model
structure, input shapes, hardware and torch version, so the next call skips the search;
a decision without a winner is cached only if every candidate was tried. Each step is
said through `say` (default: a line on stderr).

>>> report = fastpipes.accelerate(model, "auto", example_inputs=(x,))   # doctest: +SKIP
>>> report.extra["auto"]["winner"]                                      # doctest: +SKIP
'generic_fp32_fast'
"""
from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from fastpipes._version import __version__
from fastpipes.apply import apply_recipe
from fastpipes.auto_order import candidate_recipes  # noqa: F401  (its home before)
from fastpipes.auto_search import (Decision, Excluded, Slower, Trial, TrialStatus, _silent,
                                   _stderr, search, summary)
from fastpipes.bounds import fits_type
from fastpipes.cache import cache_dir, private_dir, untrusted
from fastpipes.errors import CacheError, InputError
from fastpipes.files import atomic_write
from fastpipes.fingerprint import machine_fingerprint, shapes, structure_signature
from fastpipes.hardware import detect
from fastpipes.families import find_adapter
from fastpipes.fidelity import Fidelity
from fastpipes.recipe.ablate import ablations, parse, rebuild
from fastpipes.recipe.load import load_recipe
from fastpipes.recipe.schema import AutoConfig, PrecisionClass
from fastpipes.report import Report
from fastpipes.timing import median_time

# 2: candidates keyed by their resolved content, not their names; 3: trials carry their
# precision class and the bars they were held to; 4: likeliest first, untried trials carry
# no precision class, and a "no winner" decision with untried candidates is never stored;
# 5: the calls users wait on (a SAM predictor's click) are timed too, and a candidate that
# makes one slower is not chosen
DECISION_VERSION = 5
# a waited-on call counts as slower below this share of FP32's speed: the allowance for
# timing noise, so a recipe that leaves the call alone is not rejected by chance
WAIT_NOISE = 0.9


# -- the cache key --------------------------------------------------------------------

def candidate_content(name: str) -> Any:
    """What candidate `name` is, for the decision key: its resolved recipe (bases merged),
    so editing its YAML or a base it inherits from measures again; or why it does not load
    (such a candidate fails its trial, and fixing it measures again; the error's type
    only, since its text may list unrelated recipes)."""
    try:
        return load_recipe(name).raw
    except Exception as e:  # noqa: BLE001  (the search records the failure)
        return {"unloadable": type(e).__name__}


def decision_key(modules: dict[str, torch.nn.Module], inputs: Any, candidates: list[str],
                 hardware: Any) -> str:
    payload = {
        "v": DECISION_VERSION,
        "fastpipes": __version__,
        **machine_fingerprint(hardware),
        "threads": torch.get_num_threads(),
        "model": structure_signature(modules),
        "inputs": shapes(inputs),
        "candidates": {name: candidate_content(name) for name in candidates},
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def _number(value: Any) -> bool:
    return value is None or fits_type(value, float)


def _invalid(data: Any, key: str, candidates: list[str]) -> str:
    """Why a decision file's content cannot be this key's decision ("" when it can)."""
    statuses = {s.value for s in TrialStatus}
    if not isinstance(data, dict) or data.get("key") != key:
        return f"it is not the decision of key {key}"
    if not isinstance(data.get("trials"), list) or not _number(data.get("baseline_s")):
        return "its trials or baseline_s are malformed"
    for t in data["trials"]:
        if not (isinstance(t, dict) and _of_candidates(str(t.get("recipe")), candidates)
                and t.get("status") in statuses and isinstance(t.get("reason", ""), str)
                and all(_number(t.get(k)) for k in ("latency_s", "speedup"))
                and all(isinstance(t.get(k, {}), dict) and all(_number(v) for v in t.get(k, {}).values())
                        for k in ("fidelity", "waits"))):
            return f"trial {t!r} is malformed or not of a candidate"
    winner = data.get("winner")
    if winner is None:
        untried = [t["recipe"] for t in data["trials"] if t["status"] == "over-budget"]
        return (f"it has no winner and did not try {', '.join(untried)}" if untried else "")
    if not _of_candidates(str(winner), candidates):
        return (f"its winner {winner!r} is not one of the candidates "
                f"({', '.join(candidates) or 'none'})")
    if not any(t["recipe"] == winner and t["status"] == "ok" for t in data["trials"]):
        return f"its winner {winner!r} has no successful trial"
    try:
        _load(winner)
    except Exception as e:  # noqa: BLE001
        first = (str(e).splitlines() or [""])[0]
        return f"its winner {winner!r} no longer loads ({type(e).__name__}: {first})"
    return ""


def load_decision(key: str, directory: Path, candidates: list[str],
                  warn: Callable[[str], None] | None = None) -> Decision | None:
    """This key's cached decision, or None. Never fatal: a file that is corrupt, or whose
    decision is not one this search could have made (winner not among `candidates`, or no
    longer loading, malformed trials), or a cache others can write, is reported through
    `warn` (default: a UserWarning) and ignored, and the search runs again and rewrites it.
    """
    warn = warn or (lambda message: warnings.warn(f"fastpipes: {message}", stacklevel=3))
    path = directory / "auto" / f"{key}.json"
    if not path.exists():
        return None
    why = untrusted(directory) or untrusted(path.parent)
    if why:
        warn(f"ignoring the auto decision cache {path.parent}: it is {why}")
        return None
    try:
        data = json.loads(path.read_text())
        invalid = _invalid(data, key, candidates)
        if not invalid:
            trials = [Trial(**{**t, "status": TrialStatus(t["status"])})
                      for t in data["trials"]]
            return Decision(key=data["key"], winner=data["winner"],
                            baseline_s=data["baseline_s"], trials=trials, cached=True)
    except (OSError, ValueError, KeyError, TypeError) as e:
        warn(f"ignoring corrupt auto cache file {path}: {e}")
        return None
    warn(f"ignoring invalid auto cache file {path}: {invalid}; measuring again")
    return None


def save_decision(decision: Decision, directory: Path) -> Path:
    """Write `decision` to the cache; CacheError if the cache cannot be used or trusted."""
    path = directory / "auto" / f"{decision.key}.json"
    private_dir(directory)
    private_dir(path.parent)
    try:
        atomic_write(path, json.dumps({**decision.to_dict(), "cached": False}, indent=2))
    except OSError as e:
        raise CacheError(f"cannot write {path}: {e.strerror or e}") from None
    return path


# -- the search -------------------------------------------------------------------------

def _load(name: str):
    """A candidate by name: a recipe, or an ablation of one ("sam_bf16 without compile")."""
    return load_recipe(rebuild(name) or name)


def _of_candidates(name: str, candidates: list[str]) -> bool:
    """`name` is a candidate, or an ablation of one."""
    found = parse(name)
    return name in candidates or (found is not None and found[1] in candidates)


# -- accelerate(pipe, "auto") ----------------------------------------------------------

@dataclass
class AutoTarget:
    """What auto times and how it judges fidelity.

    `call()` runs the pipeline once; `view(output, reference)` is what `compare(reference,
    view, precision_class) -> Fidelity` reads, taken right after each call while that
    configuration is still applied (`reference` is None for the FP32 run itself). The default target (:meth:`from_adapter`) uses the
    adapter on the example inputs; ``fastpipes bench --recipes auto`` passes the
    benchmark workload's own timed run.
    """

    call: Callable[[], Any]
    view: Callable[[Any, Any], Any]
    compare: Callable[[Any, Any, PrecisionClass], Fidelity]
    name: str = "adapter"  # part of the decision key: other bars, other decisions
    inputs: str = ""  # what the calls were given, in words
    # other calls users wait on (Adapter.waited_calls: a SAM predictor's click), timed with
    # FP32 and each candidate: one that makes any of them slower is not chosen
    waited: dict[str, Callable[[], Any]] = field(default_factory=dict)

    @classmethod
    def from_adapter(cls, adapter: Any, inputs: Any) -> "AutoTarget":
        waited = adapter.waited_calls(inputs)
        return cls(call=lambda: adapter.call(inputs),
                   view=lambda out, ref: adapter.fidelity_view(inputs, out, ref),
                   compare=adapter.compare, name="adapter" + "".join(f"+{w}" for w in waited),
                   inputs=adapter.describe_inputs(inputs)
                   + "".join(f"; then {w}" for w in waited), waited=waited)


def _measure_candidates(pipe: Any, adapter: Any, target: AutoTarget, cfg: AutoConfig,
                        timer: Callable, candidates: list[str], key: str,
                        say: Callable[[str], None], verbose: bool) -> Decision:
    """The search on `pipe`: each candidate applied, timed, judged and undone."""
    base_waits: dict[str, float] = {}

    def timed(reference: Any = None) -> tuple[float, Any]:
        with torch.no_grad():
            secs, out = timer(target.call)
            return secs, target.view(out, reference)

    def waits() -> dict[str, float]:  # each waited-on call's seconds
        with torch.no_grad():
            return {name: timer(call)[0] for name, call in target.waited.items()}

    def trial(name: str, reference: Any) -> tuple[float, Fidelity]:
        rec = _load(name)
        if rec.precision_class.rank > cfg.max_class.rank:
            raise Excluded(f"precision class {rec.precision_class.value} is looser than "
                           f"auto.max_class={cfg.max_class.value}")
        report, snap = apply_recipe(pipe, rec, strict=True, adapter=adapter, verbose=verbose)
        try:
            secs, view = timed(reference)
            fid = target.compare(reference, view, PrecisionClass(report.precision_class))
            speedups = {k: base_waits[k] / s for k, s in waits().items()}
        finally:
            snap.restore()
            torch._dynamo.reset()  # drop compiled code of the undone candidate
        slower = [f"{k} {x:.2f}x FP32" for k, x in speedups.items() if x < WAIT_NOISE]
        if slower:
            raise Slower(f"makes a call users wait on slower: {', '.join(slower)} (below "
                         f"{WAIT_NOISE:g}x, the noise allowance)", secs, fid, speedups)
        return secs, fid, speedups

    def ablated(winner: str) -> list[str]:  # the winner with each pass dropped
        return [v["name"] for v in ablations(_load(winner), with_alone=False)]

    def baseline() -> tuple[float, Any]:  # FP32 on the inputs: a bad input fails here
        try:
            secs, reference = timed()
            base_waits.update(waits())
            if base_waits:
                say("FP32 " + ", ".join(f"{k}: {s:.3g} s" for k, s in base_waits.items()))
            return secs, reference
        except (TypeError, ValueError, RuntimeError, IndexError, KeyError,
                AttributeError) as e:
            raise InputError(f"the pipeline fails on its example inputs "
                             f"({target.inputs or 'made by the adapter'}) before any "
                             f"recipe is tried: {type(e).__name__}: {e}; give "
                             "example_inputs it can be called with") from e

    return search(candidates, baseline, trial, cfg.budget_s, key,
                  ablated if cfg.ablate else None, say, verbose)


def _decide(cfg: AutoConfig, key: str, candidates: list[str], notes: list[str],
            say: Callable[[str], None], measure: Callable[[], Decision],
            searching: str) -> Decision:
    """The cached decision for `key` when it is still good, else `measure()`'s, stored for
    the next call when it can be. Cache trouble never fails the call: it is warned about and
    appended to `notes` (the report lists them)."""
    def note(message: str) -> None:
        notes.append(f"auto: {message}")
        warnings.warn(f"fastpipes: auto: {message}", stacklevel=4)

    decision = load_decision(key, cache_dir(), candidates, note) if cfg.cache else None
    if decision is not None:
        say(f"using the cached decision {key} ({decision.winner or 'none: FP32 kept'}); "
            "`fastpipes cache clear auto` measures again")
        return decision
    say(searching)
    decision = measure()
    if cfg.cache and not decision.storable:
        notes.append("auto: this decision is not stored: candidates were left untried, "
                     "so the next call searches again")
    elif cfg.cache:
        try:
            save_decision(decision, cache_dir())
        except CacheError as e:  # the search's result is still good: apply it
            note(f"the decision could not be saved ({e}); it is applied, but the next "
                 "call searches again")
    return decision


def accelerate_auto(pipe: Any, overrides: Any = None, strict: bool = False,
                    example_inputs: Any = None, measure: Callable | None = None,
                    target: AutoTarget | None = None,
                    say: Callable[[str], None] | None = None, verbose: bool = True) -> Report:
    """The body of ``accelerate(pipe, "auto")``; `measure` may replace timing in tests.

    `measure(call) -> (seconds, output)` times a zero-argument call of the pipeline.
    `target` replaces what is timed and compared (default: the adapter on `example_inputs`,
    or on inputs the adapter makes when there are none). `say` gets the progress lines
    (default: stderr, prefixed ``fastpipes: auto:``; with `verbose` False, none at all).
    """
    say = say or (_stderr if verbose else _silent)
    settings = load_recipe({"name": "auto", "auto": {}}, overrides)
    cfg: AutoConfig = settings.sections["auto"]
    adapter = find_adapter(pipe)
    hw = detect()
    inputs = example_inputs
    if target is None:
        inputs = example_inputs if example_inputs is not None else adapter.example_inputs()
        target = AutoTarget.from_adapter(adapter, inputs)
    device = str(adapter.device())
    candidates = candidate_recipes(adapter.family, hw, cfg, device)
    key = decision_key(adapter.components(), [target.name, inputs], candidates, hw)
    timer = measure or (lambda call: median_time(call, cfg.iters, device))

    notes: list[str] = []  # cache trouble: warned, and listed in the report
    decision = _decide(cfg, key, candidates, notes, say,
                       measure=lambda: _measure_candidates(pipe, adapter, target, cfg, timer,
                                                           candidates, key, say,
                                                           verbose),
                       searching=f"{len(candidates)} candidate(s) for this {adapter.family} "
                                 f"pipeline on this {hw.tier} CPU, likeliest first: "
                                 f"{', '.join(candidates) or 'none'}")
    if decision.winner is None:
        report = Report(recipe="auto (none: FP32 kept)", family=adapter.family,
                        adapter=adapter.name, components=list(adapter.components()))
    else:
        report, snapshot = apply_recipe(pipe, _load(decision.winner), strict, adapter, verbose)
        snapshot.discard()
        report.recipe = f"auto -> {decision.winner}"
    report.warnings += summary(decision) + notes
    report.extra["auto"] = {**decision.to_dict(), "inputs": target.inputs,
                            "max_class": cfg.max_class.value}
    return report
