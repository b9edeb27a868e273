"""What accelerate() did: passes applied and skipped, per-component changes, warnings."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any


class PassStatus(str, Enum):
    """What happened to one pass of a recipe."""

    applied = "applied"
    skipped = "skipped"  # did not apply to this pipeline, or `enabled: false`
    fallback = "fallback"  # ran something else instead (e.g. eager after a failed compile)


MARKS = {PassStatus.applied: "+", PassStatus.skipped: "-", PassStatus.fallback: "~"}


@dataclass
class PassRecord:
    """One pass as applied (or skipped): what it changed, and where."""

    name: str
    status: PassStatus = PassStatus.applied
    reason: str = ""  # why skipped / why it fell back
    changes: list[str] = field(default_factory=list)  # "unet: 70 Attention -> SDPA processor"
    components: list[str] = field(default_factory=list)


@dataclass
class Report:
    """Returned by :func:`fastpipes.accelerate`.

    ``precision_class`` is the numerics the applied passes compute in (``exact``, ``bf16``,
    ``fp16``, ``int8``, ``int4``; see fastpipes.passes.numerics): the class whose fidelity
    bars the result is judged by.

    >>> report = fastpipes.accelerate(model, recipe="generic_fp32_fast")  # doctest: +SKIP
    >>> print(report)                                                     # doctest: +SKIP
    """

    recipe: str
    family: str
    adapter: str
    components: list[str] = field(default_factory=list)
    passes: list[PassRecord] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    precision_class: str = "exact"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def applied(self) -> list[str]:
        return [p.name for p in self.passes if p.status is PassStatus.applied]

    @property
    def skipped(self) -> dict[str, str]:
        return {p.name: p.reason for p in self.passes if p.status is not PassStatus.applied}

    def record(self, name: str) -> PassRecord:
        """The record of pass `name`, created on first use."""
        for p in self.passes:
            if p.name == name:
                return p
        rec = PassRecord(name)
        self.passes.append(rec)
        return rec

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for p in d["passes"]:  # plain strings in JSON
            p["status"] = PassStatus(p["status"]).value
        return d

    def __str__(self) -> str:
        lines = [f"fastpipes: recipe {self.recipe!r} on {self.adapter} ({self.family}), "
                 f"precision class {self.precision_class}"]
        if self.components:
            lines.append(f"  components: {', '.join(self.components)}")
        for p in self.passes:
            head = f"  {MARKS.get(p.status, '?')} {p.name}: {p.status.value}"
            lines.append(f"{head} ({p.reason})" if p.reason else head)
            lines += [f"      {c}" for c in p.changes]
        lines += [f"  ! {w}" for w in self.warnings]
        return "\n".join(lines)
