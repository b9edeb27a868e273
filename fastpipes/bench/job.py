"""One worker's job: a typed record the parent writes as JSON and the worker reads back.

The parent (bench/runner.py) makes one :class:`BenchJob` per configuration, bench/processes.py
writes it to ``<tag>.job.json`` and names the files the worker reports through, and the worker
(bench/worker.py) loads it with :meth:`BenchJob.from_json`. The device is the spec's, once.

>>> job = BenchJob(kind="config", tag="c0", spec=WorkloadSpec("toy", size="tiny"), threads=2)
>>> BenchJob.from_json(job.to_json()) == job
True
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from fastpipes.bench.workloads import WorkloadSpec

KINDS = ("config", "warm", "limits")  # a configuration; its second start; machine limits


@dataclass
class BenchJob:
    kind: str  # one of KINDS
    tag: str  # names the job's files in the work directory: c0, c1-warm, limits
    spec: WorkloadSpec  # what to build, and on which device
    threads: int
    iters: int = 5
    warmup: int = 1
    profile: bool = False
    recipe: dict | str | None = None  # resolved recipe mapping, "auto"; None: FP32 eager
    baseline: bool = False  # the FP32 eager row: saves the reference output
    reference: str = ""  # the FP32 reference output (written by the baseline, read by recipes)
    cache: str | None = None  # this configuration's own cache directory
    auto_overrides: list[str] = field(default_factory=list)  # auto.* overrides for recipe=auto
    limits_quick: bool = False
    events: str = ""  # set by bench/processes.py: the JSON-lines progress log
    result: str = ""  # set by bench/processes.py: the result JSON

    def __post_init__(self) -> None:
        assert self.kind in KINDS, f"job kind {self.kind!r} is not one of {KINDS}"

    @property
    def device(self) -> str:
        return self.spec.device

    @property
    def steps(self) -> int:
        """Progress steps the worker reports (build, accelerate, first call, each call...)."""
        if self.kind == "limits":
            return 1
        if self.kind == "warm":
            return 3
        return 3 + (self.recipe is not None) + self.warmup + self.iters

    def but(self, **changes: Any) -> "BenchJob":
        """A copy with `changes` (e.g. the second start of a configuration)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BenchJob":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        assert not unknown, f"bench job keys {unknown} are not BenchJob fields"
        return cls(**{**data, "spec": WorkloadSpec(**data["spec"])})

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> "BenchJob":
        return cls.from_dict(json.loads(text))
