"""recipe="auto": measure the candidate recipes on the user's own pipeline, keep the fastest
faithful one, and remember the decision on disk.

Candidates are the built-in recipes of the pipeline's family (and family ``any``) whose
``requires`` this machine meets, plus user recipes named in ``auto.candidates``. Each is
applied, timed on the user's inputs, compared with the untouched FP32 output, and undone
(accelerate() snapshots make that exact); the winner is then applied for real. The
decision is cached under the fastpipes cache directory, keyed by model structure, input
shapes, hardware and torch version, so the next call (or process) skips the search.

>>> report = fastpipes.accelerate(model, "auto", example_inputs=(x,))   # doctest: +SKIP
>>> report.extra["auto"]["winner"]                                      # doctest: +SKIP
'generic_fp32_fast'
"""
from __future__ import annotations

import hashlib
import json
import statistics
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from fastpipes.cache import CACHE_ENV, cache_dir, private_dir, untrusted  # noqa: F401
from fastpipes.errors import CacheError
from fastpipes.recipe.schema import SECTIONS, Section

DECISION_VERSION = 2  # 2: candidates keyed by their resolved content, not their names
TRIAL_STATUSES = ("ok", "unfaithful", "failed", "over-budget")


@dataclass(frozen=True)
class AutoConfig(Section):
    """The ``auto`` section: how recipe="auto" searches."""

    budget_s: float = 300.0  # stop trying new candidates after this long (compile included)
    candidates: list[str] = field(default_factory=list)  # extra recipes (names or paths)
    builtin: bool = True  # also try the built-in recipes of the family whose requires are met
    iters: int = 3  # timed calls per candidate (median kept), after one warm-up call
    min_fidelity: float = 0.0  # 0 = the family's default threshold
    cache: bool = True  # reuse / store decisions on disk

    def check(self) -> list[tuple[str, str, str]]:
        out = []
        if self.budget_s <= 0:
            out.append(("budget_s", f"must be > 0, got {self.budget_s}", "a positive number"))
        if self.iters < 1:
            out.append(("iters", f"must be >= 1, got {self.iters}", "a positive integer"))
        return out


SECTIONS.add("auto", AutoConfig)


@dataclass
class Trial:
    recipe: str
    status: str  # ok | unfaithful | failed | over-budget
    latency_s: float | None = None
    speedup: float | None = None
    fidelity: float | None = None
    reason: str = ""


@dataclass
class Decision:
    key: str
    winner: str | None
    baseline_s: float | None
    trials: list[Trial]
    cached: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


# -- the cache key --------------------------------------------------------------------

def _shapes(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return [list(obj.shape), str(obj.dtype)]
    if isinstance(obj, (list, tuple)):
        return [_shapes(o) for o in obj]
    if isinstance(obj, dict):
        return {str(k): _shapes(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if hasattr(obj, "shape"):  # numpy arrays (SAM images)
        return [list(obj.shape), str(getattr(obj, "dtype", ""))]
    return repr(obj) if isinstance(obj, (int, float, str, bool, type(None))) else type(obj).__name__


def structure_signature(modules: dict[str, torch.nn.Module]) -> list:
    """Module classes and parameter shapes/dtypes: what the model *is*, not its values."""
    sig = []
    for name, m in modules.items():
        params = [(n, list(p.shape), str(p.dtype)) for n, p in m.named_parameters()]
        classes = sorted({type(x).__qualname__ for x in m.modules()})
        sig.append([name, type(m).__qualname__, classes, params])
    return sig


def machine_fingerprint(hardware: Any) -> dict:
    """What a cached result depends on beyond the model: torch, CPU model and ISA, GPUs."""
    return {"torch": torch.__version__, "cpu": hardware.cpu_model,
            "isa": sorted(k for k, v in hardware.isa.items() if v), "cuda": hardware.cuda_devices}


def candidate_content(name: str) -> Any:
    """What candidate `name` is, for the decision key: its resolved recipe (bases merged),
    so editing its YAML or a base it inherits from measures again; or why it does not load
    (such a candidate fails its trial, and fixing it measures again; the error's type
    only, since its text may list unrelated recipes)."""
    from fastpipes.recipe.load import load_recipe

    try:
        return load_recipe(name).raw
    except Exception as e:  # noqa: BLE001  (the search records the failure)
        return {"unloadable": type(e).__name__}


def decision_key(modules: dict[str, torch.nn.Module], inputs: Any, candidates: list[str],
                 hardware: Any) -> str:
    import fastpipes

    payload = {
        "v": DECISION_VERSION,
        "fastpipes": fastpipes.__version__,
        **machine_fingerprint(hardware),
        "threads": torch.get_num_threads(),
        "model": structure_signature(modules),
        "inputs": _shapes(inputs),
        "candidates": {name: candidate_content(name) for name in candidates},
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def _number(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _invalid(data: Any, key: str, candidates: list[str]) -> str:
    """Why a decision file's content cannot be this key's decision ("" when it can)."""
    from fastpipes.recipe.load import load_recipe

    if not isinstance(data, dict) or data.get("key") != key:
        return f"it is not the decision of key {key}"
    if not isinstance(data.get("trials"), list) or not _number(data.get("baseline_s")):
        return "its trials or baseline_s are malformed"
    for t in data["trials"]:
        if not (isinstance(t, dict) and t.get("recipe") in candidates
                and t.get("status") in TRIAL_STATUSES and isinstance(t.get("reason", ""), str)
                and all(_number(t.get(k)) for k in ("latency_s", "speedup", "fidelity"))):
            return f"trial {t!r} is malformed or not of a candidate"
    winner = data.get("winner")
    if winner is None:
        return ""
    if winner not in candidates:
        return (f"its winner {winner!r} is not one of the candidates "
                f"({', '.join(candidates) or 'none'})")
    if not any(t["recipe"] == winner and t["status"] == "ok" for t in data["trials"]):
        return f"its winner {winner!r} has no successful trial"
    try:
        load_recipe(winner)
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
            trials = [Trial(**t) for t in data["trials"]]
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
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_text(json.dumps({**decision.to_dict(), "cached": False}, indent=2))
        tmp.replace(path)  # atomic: a crash never leaves half a file
    except OSError as e:
        raise CacheError(f"cannot write {path}: {e.strerror or e}") from None
    return path


# -- the search -------------------------------------------------------------------------

def candidate_recipes(family: str, hardware: Any, extra: list[str], device: str = "cpu",
                      builtin: bool = True) -> list[str]:
    """Built-in recipes of `family` (or `any`) whose requires are met, then `extra`."""
    if not builtin:
        return list(dict.fromkeys(extra))
    from fastpipes.hardware import unmet_requirements
    from fastpipes.recipe.load import available, builtin_dir, load_recipe

    builtin = builtin_dir().resolve()
    names = []
    for name, path in sorted(available().items()):
        if path.parent.resolve() != builtin:
            continue
        rec = load_recipe(path)
        if rec.family.value in (family, "any") and not unmet_requirements(rec.requires, hardware, device):
            names.append(name)
    return names + [c for c in extra if c not in names]


def time_call(fn: Callable[[], Any], iters: int) -> tuple[float, Any]:
    """(median seconds over `iters` calls after one warm-up call, last output)."""
    out = fn()  # warm-up: compiles, fills caches
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def search(candidates: list[str], baseline: Callable[[], tuple[float, Any]],
           trial: Callable[[str, Any], tuple[float, float, bool]], budget_s: float,
           key: str) -> Decision:
    """Measure each candidate; the fastest faithful one that beats FP32 wins.

    `baseline()` -> (seconds, reference output); `trial(name, reference)` -> (seconds,
    fidelity score, faithful?) and must leave the pipeline as it found it.
    """
    start = time.perf_counter()
    base_s, reference = baseline()
    trials: list[Trial] = []
    for name in candidates:
        if time.perf_counter() - start > budget_s:
            trials.append(Trial(name, "over-budget", reason=f"auto.budget_s={budget_s:g} s spent"))
            continue
        try:
            secs, score, ok = trial(name, reference)
        except Exception as e:  # a candidate that cannot run here is just not chosen
            trials.append(Trial(name, "failed", reason=f"{type(e).__name__}: {str(e).splitlines()[0]}"))
            continue
        trials.append(Trial(name, "ok" if ok else "unfaithful", secs, base_s / secs, score,
                            "" if ok else "fidelity below the family threshold"))
    faithful = [t for t in trials if t.status == "ok" and t.speedup and t.speedup > 1.0]
    winner = min(faithful, key=lambda t: t.latency_s).recipe if faithful else None
    return Decision(key=key, winner=winner, baseline_s=base_s, trials=trials)


# -- accelerate(pipe, "auto") ----------------------------------------------------------

@dataclass
class AutoTarget:
    """What auto times and how it judges fidelity.

    `call()` runs the pipeline once; `comparable(output)` turns an output into what
    `compare(reference, output) -> (score, faithful?)` takes, and is applied right after
    each call, while that configuration is still applied. The default target
    (:meth:`from_adapter`) calls the adapter on the example inputs and uses its family
    metric; ``fastpipes bench --recipes auto`` passes the workload's own run and fidelity bars.
    `higher_is_better` says which way ``auto.min_fidelity`` cuts (None: it does not apply).
    """

    call: Callable[[], Any]
    compare: Callable[[Any, Any], tuple[float, bool]]
    comparable: Callable[[Any], Any] = lambda out: out
    higher_is_better: bool | None = False
    name: str = "adapter"  # part of the decision key: different bars, different decisions

    @classmethod
    def from_adapter(cls, adapter: Any, inputs: Any) -> "AutoTarget":
        return cls(call=lambda: adapter.call(inputs), compare=adapter.compare,
                   higher_is_better=adapter.higher_is_better)

    def judge(self, reference: Any, output: Any, min_fidelity: float) -> tuple[float, bool]:
        score, ok = self.compare(reference, output)
        if min_fidelity and self.higher_is_better is not None:
            ok = score >= min_fidelity if self.higher_is_better else score <= min_fidelity
        return score, ok


def accelerate_auto(pipe: Any, overrides: Any = None, strict: bool = False,
                    example_inputs: Any = None, measure: Callable | None = None,
                    target: AutoTarget | None = None):
    """The body of ``accelerate(pipe, "auto")``; `measure` may replace timing in tests.

    `measure(call) -> (seconds, output)` times a zero-argument call of the pipeline.
    `target` replaces what is timed and compared (default: the adapter on `example_inputs`).
    """
    from fastpipes.api import apply_recipe
    from fastpipes.hardware import detect
    from fastpipes.pipelines.base import find_adapter
    from fastpipes.recipe.load import load_recipe

    settings = load_recipe({"name": "auto", "auto": {}}, overrides)
    cfg: AutoConfig = settings.sections["auto"]
    adapter = find_adapter(pipe)
    hw = detect()
    if target is None:
        inputs = example_inputs if example_inputs is not None else adapter.example_inputs()
        target = AutoTarget.from_adapter(adapter, inputs)
    else:
        inputs = example_inputs
    device = str(adapter.device())
    candidates = candidate_recipes(adapter.family.value, hw, list(cfg.candidates), device,
                                   cfg.builtin)
    key = decision_key(adapter.components(), [target.name, inputs], candidates, hw)
    timer = measure or (lambda call: time_call(call, cfg.iters))

    notes: list[str] = []  # cache trouble: warned, and listed in the report

    def note(message: str) -> None:
        notes.append(f"auto: {message}")
        warnings.warn(f"fastpipes: auto: {message}", stacklevel=3)

    decision = load_decision(key, cache_dir(), candidates, note) if cfg.cache else None
    if decision is None:
        def timed() -> tuple[float, Any]:
            with torch.no_grad():
                secs, out = timer(target.call)
                return secs, target.comparable(out)

        def trial(name: str, reference: Any):
            rec = load_recipe(name)
            _, snap = apply_recipe(pipe, rec, strict=True, adapter=adapter)
            try:
                secs, out = timed()
                score, ok = target.judge(reference, out, cfg.min_fidelity)
            finally:
                snap.restore()
                torch._dynamo.reset()  # drop compiled code of the undone candidate
            return secs, score, ok

        decision = search(candidates, timed, trial, cfg.budget_s, key)
        if cfg.cache:
            try:
                save_decision(decision, cache_dir())
            except CacheError as e:  # the search's result is still good: apply it
                note(f"the decision could not be saved ({e}); it is applied, but the next "
                     "call searches again")
    if decision.winner is None:
        from fastpipes.report import Report

        report = Report(recipe="auto (none: FP32 kept)", family=adapter.family.value,
                        adapter=adapter.name, components=list(adapter.components()))
        report.warnings.append("auto: no candidate was both faithful and faster than FP32; "
                               "the pipeline is unchanged")
    else:
        report, _ = apply_recipe(pipe, load_recipe(decision.winner), strict, adapter)
        report.recipe = f"auto -> {decision.winner}"
    report.warnings += notes
    report.extra["auto"] = decision.to_dict()
    return report
