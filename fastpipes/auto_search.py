"""The search of recipe="auto": each candidate tried in turn within the budget, every step
said, and what was not tried kept apart from what lost.

A trial that was not run (``over-budget``, ``excluded``) carries no precision class and no
numbers, and a decision without a winner that left candidates untried is not
``storable``: "no winner" after a budget cut is no verdict on the recipes not tried.
"""
from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, Callable

from fastpipes.auto_order import trying, untried_summary
from fastpipes.fidelity import Fidelity
from fastpipes.progress import heartbeat


class TrialStatus(str, Enum):
    ok = "ok"  # faithful by its class's bars
    unfaithful = "unfaithful"  # misses its class's bars
    failed = "failed"  # could not be applied or run here
    over_budget = "over-budget"  # not tried: auto.budget_s was spent
    excluded = "excluded"  # not tried: its precision class is looser than auto.max_class
    slower = "slower"  # a call users wait on (a SAM click) got slower than FP32's


class Excluded(Exception):
    """A candidate that is not tried (the reason is the message)."""


class Slower(Exception):
    """A candidate that made one of the pipeline's waited-on calls slower than FP32's: it
    was timed and judged (`secs`, `fidelity`), but is not chosen (the reason is the
    message)."""

    def __init__(self, message: str, secs: float, fidelity: Fidelity,
                 waits: dict[str, float]):
        super().__init__(message)
        self.secs, self.fidelity, self.waits = secs, fidelity, waits


@dataclass
class Trial:
    recipe: str
    status: TrialStatus
    precision_class: str | None = None  # the class it was judged by; None: not judged
    latency_s: float | None = None
    speedup: float | None = None
    fidelity: dict[str, float] = field(default_factory=dict)  # the family's metrics
    bars: str = ""  # the bars it was held to
    reason: str = ""
    # speedup over FP32 of each other call users wait on (AutoTarget.waited), e.g. "click"
    waits: dict[str, float] = field(default_factory=dict)

    @property
    def tried(self) -> bool:
        return self.status not in (TrialStatus.over_budget, TrialStatus.excluded)


@dataclass
class Decision:
    key: str
    winner: str | None
    baseline_s: float | None
    trials: list[Trial]
    cached: bool = False

    @property
    def storable(self) -> bool:
        """A decision is worth reusing if it has a winner, or if every candidate was tried
        and lost: "no winner" after a budget cut is no verdict on the untried ones."""
        return self.winner is not None or all(t.tried for t in self.trials)

    def to_dict(self) -> dict:
        d = asdict(self)
        for t in d["trials"]:
            t["status"] = TrialStatus(t["status"]).value
        return d


def _winner(trials: list[Trial]) -> str | None:
    faithful = [t for t in trials if t.status is TrialStatus.ok and t.speedup and t.speedup > 1.0]
    return min(faithful, key=lambda t: t.latency_s).recipe if faithful else None


def _stderr(text: str) -> None:
    print(f"fastpipes: auto: {text}", file=sys.stderr, flush=True)


def _silent(text: str) -> None:
    """accelerate(..., verbose=False)"""


def search(candidates: list[str], baseline: Callable[[], tuple[float, Any]],
           trial: Callable[[str, Any], tuple[float, Fidelity, dict[str, float]]], budget_s: float,
           key: str, then: Callable[[str], list[str]] | None = None,
           say: Callable[[str], None] = _stderr, verbose: bool = True) -> Decision:
    """Measure each candidate, in the order given; the fastest faithful one that beats FP32
    wins.

    `baseline()` -> (seconds, reference view); `trial(name, reference)` -> (seconds,
    Fidelity by the candidate's class, {waited call: speedup}) and must leave the pipeline
    as it found it; it raises :class:`Excluded` for a candidate it does not try and
    :class:`Slower` for one that made a waited-on call slower.
    `then(winner)` names more candidates to try once the first round has a winner (the
    winner's ablations), within the same budget. The budget stops new trials only once
    one was tried, so the likeliest winner (listed first) is always measured. `say` gets
    a line before the baseline and before and after each trial; with `verbose`, a heartbeat
    (fastpipes.progress) says every 10 s what a long one is doing.
    """
    start = time.perf_counter()
    say(f"timing the FP32 baseline (budget: auto.budget_s={budget_s:g} s)")
    with heartbeat("auto", "timing the FP32 baseline", enabled=verbose):
        base_s, reference = baseline()
    say(f"FP32 baseline: {base_s:.3g} s per call")
    trials: list[Trial] = []
    run = _Round(trials, trial, reference, base_s, start, budget_s, say, verbose)
    run.measure(candidates, "candidate")
    winner = _winner(trials)
    if winner and then:
        run.measure(then(winner), f"ablation of {winner}")
        winner = _winner(trials)
    untried = [t.recipe for t in trials if t.status is TrialStatus.over_budget]
    if untried:
        say(f"auto.budget_s={budget_s:g} s spent: not tried {', '.join(untried)} (raise "
            "auto.budget_s to try them)")
    say(f"chose {winner}" if winner else "no candidate tried was faithful and faster than FP32")
    return Decision(key=key, winner=winner, baseline_s=base_s, trials=trials)


@dataclass
class _Round:
    """Trials appended to `trials`, each said before and after."""

    trials: list[Trial]
    trial: Callable[[str, Any], tuple[float, Fidelity, dict[str, float]]]
    reference: Any
    base_s: float
    start: float
    budget_s: float
    say: Callable[[str], None]
    verbose: bool = True

    def measure(self, names: list[str], what: str) -> None:
        for n, name in enumerate(names, 1):
            elapsed = time.perf_counter() - self.start
            if elapsed > self.budget_s and any(t.tried for t in self.trials):
                self.trials.append(Trial(name, TrialStatus.over_budget,
                                         reason=f"auto.budget_s={self.budget_s:g} s was spent "
                                                "before its turn"))
                continue
            self.say(trying(name, n, len(names), elapsed, self.budget_s, what))
            with heartbeat("auto", f"{name}: applying it, then timing it and comparing its "
                           "output with FP32's (a compiling recipe compiles first)",
                           enabled=self.verbose):
                t = self._one(name)
            self.trials.append(t)
            got = (f"{t.latency_s:.3g} s, {t.speedup:.2f}x FP32, " if t.latency_s else "")
            got += "".join(f"{call} {x:.2f}x FP32, " for call, x in t.waits.items())
            self.say(f"{name}: {got}{t.status.value}"
                     + (f" ({t.reason})" if t.status is not TrialStatus.ok else ""))

    def _one(self, name: str) -> Trial:
        try:
            secs, fid, waits = self.trial(name, self.reference)
        except Excluded as e:
            return Trial(name, TrialStatus.excluded, reason=str(e))
        except Slower as e:
            return Trial(name, TrialStatus.slower, e.fidelity.precision_class, e.secs,
                         self.base_s / e.secs, dict(e.fidelity.metrics), e.fidelity.thresholds,
                         str(e), e.waits)
        except Exception as e:  # a candidate that cannot run here is just not chosen
            first = (str(e).splitlines() or [""])[0]
            return Trial(name, TrialStatus.failed, reason=f"{type(e).__name__}: {first}")
        ok = fid.ok is not False  # an output that cannot be judged is not held against it
        return Trial(name, TrialStatus.ok if ok else TrialStatus.unfaithful,
                     fid.precision_class, secs, self.base_s / secs, dict(fid.metrics),
                     fid.thresholds, fid.note if ok else
                     f"misses its {fid.precision_class} bars: {fid.thresholds}", waits)


def summary(decision: Decision) -> list[str]:
    """The report's words on a decision: what was tried, and what was not and why (an
    untried candidate is never counted as a loser)."""
    tried = [t.recipe for t in decision.trials if t.tried]
    untried = untried_summary(decision.trials)
    out = []
    if decision.winner is None:
        out.append(f"auto: none of the {len(tried)} candidate(s) tried "
                   f"({', '.join(tried) or 'none'}) was both faithful (by its precision class's "
                   "bars) and faster than FP32; the pipeline is unchanged")
    if untried:
        out.append(f"auto: not tried: {untried}"
                   + ("; raise auto.budget_s to try them" if "over-budget" in untried else ""))
    return out
