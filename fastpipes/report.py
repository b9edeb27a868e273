"""What accelerate() did: passes applied and skipped, per-component changes, warnings."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class PassRecord:
    """One pass as applied (or skipped): what it changed, and where."""

    name: str
    status: str = "applied"  # applied | skipped | fallback
    reason: str = ""  # why skipped / why it fell back
    changes: list[str] = field(default_factory=list)  # "unet: 70 Attention -> SDPA processor"
    components: list[str] = field(default_factory=list)


@dataclass
class Report:
    """Returned by :func:`fastpipes.accelerate`.

    >>> report = fastpipes.accelerate(model, recipe="generic_fp32_fast")  # doctest: +SKIP
    >>> print(report)                                                     # doctest: +SKIP
    """

    recipe: str
    family: str
    adapter: str
    components: list[str] = field(default_factory=list)
    passes: list[PassRecord] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def applied(self) -> list[str]:
        return [p.name for p in self.passes if p.status == "applied"]

    @property
    def skipped(self) -> dict[str, str]:
        return {p.name: p.reason for p in self.passes if p.status != "applied"}

    def record(self, name: str) -> PassRecord:
        """The record of pass `name`, created on first use."""
        for p in self.passes:
            if p.name == name:
                return p
        rec = PassRecord(name)
        self.passes.append(rec)
        return rec

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        lines = [f"fastpipes: recipe {self.recipe!r} on {self.adapter} ({self.family})"]
        if self.components:
            lines.append(f"  components: {', '.join(self.components)}")
        for p in self.passes:
            mark = {"applied": "+", "skipped": "-", "fallback": "~"}.get(p.status, "?")
            head = f"  {mark} {p.name}: {p.status}"
            lines.append(f"{head} ({p.reason})" if p.reason else head)
            lines += [f"      {c}" for c in p.changes]
        lines += [f"  ! {w}" for w in self.warnings]
        return "\n".join(lines)
