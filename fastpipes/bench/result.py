"""What a benchmark produces: one :class:`ConfigResult` per configuration in a :class:`BenchResult`.

``BenchResult.to_dict()`` is the JSON written by ``--json``; its shape is :data:`JSON_SCHEMA`
(documented in docs/benchmarks.md, checked by :func:`check_schema` in the tests).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
BASELINE = "fp32_eager"


class RunStatus(str, Enum):
    """What happened to one configuration of a benchmark."""

    ok = "ok"
    failed = "failed"  # could not be loaded, applied or run (reason says why)
    cut = "cut"  # killed: over --max-time, or interrupted (Ctrl-C / SIGTERM)
    not_run = "not_run"  # planned but not run (requires unmet, --no-baseline, interrupted)


OK, FAILED, CUT, NOT_RUN = RunStatus.ok, RunStatus.failed, RunStatus.cut, RunStatus.not_run


@dataclass
class ConfigResult:
    """One row: the FP32 eager baseline or one recipe."""

    name: str  # "fp32_eager" or the recipe name
    recipe_source: str | None = None  # file the recipe came from (None: the baseline)
    baseline: bool = False
    status: RunStatus = NOT_RUN
    reason: str = ""  # why failed / cut / not run
    hardware_note: str = ""  # requires this machine misses (run anyway: asked by name / --all)
    build_s: float | None = None
    first_call_s: float | None = None
    compile_s: float | None = None  # first call minus the steady-state median (cold caches)
    compile_warm_s: float | None = None  # the same in a second process on the caches left
    latency_s: dict[str, Any] | None = None  # median, min, max, runs
    items: int | None = None  # units one run produces
    bytes_per_item: float | None = None  # memory-bound work: bytes read per unit
    throughput: float | None = None  # unit per second
    unit: str = ""
    speedup: float | None = None  # baseline median / this median
    precision_class: str | None = None  # the numerics it computed in: its fidelity bars' class
    peak_rss_mb: float | None = None
    cuda_max_allocated_mb: float | None = None
    achieved_gflops: float | None = None  # workload FLOPs / median latency
    gflops_share: float | None = None  # of the measured GEMM peak of its precision class
    achieved_gbps: float | None = None  # memory-bound: bytes_per_item * items/s
    bandwidth_share: float | None = None  # of the measured copy bandwidth
    fidelity: dict[str, Any] | None = None  # metrics, ok, thresholds, precision_class, note
    report: dict[str, Any] | None = None  # fastpipes.Report.to_dict(): applied/skipped passes
    profile: dict[str, Any] | None = None  # --profile: total_s, groups {name: s}, top_ops
    extra: dict[str, float] = field(default_factory=dict)
    wall_s: float | None = None  # the worker process, start to end
    traceback: str = ""

    @property
    def ok(self) -> bool:
        return self.status is OK


@dataclass
class BenchResult:
    """Everything one ``run_benchmark`` measured; render with :mod:`fastpipes.bench.render`.

    >>> result = run_benchmark(WorkloadSpec("toy", size="tiny"), ["r.yaml"])  # doctest: +SKIP
    >>> print(render.markdown(result)); Path("bench.json").write_text(result.json())  # doctest: +SKIP
    """

    workload: dict[str, Any]  # family, description, spec, unit, bound, flops
    settings: dict[str, Any]  # iters, warmup, threads, max_time_s, device, overrides
    machine: dict[str, Any]  # fastpipes.hardware.detect().to_dict()
    limits: dict[str, Any] | None  # fastpipes.bench.limits.Limits, or None when not measured
    configs: list[ConfigResult]
    torch_version: str = ""
    fastpipes_version: str = ""
    command: str = ""
    date: str = ""
    interrupted: bool = False  # stopped early (Ctrl-C / SIGTERM): the rows run so far
    # was the machine quiet? fastpipes.bench.noise.noise_verdict: noisy, evidence, checked
    noise: dict[str, Any] | None = None
    schema_version: int = SCHEMA_VERSION

    def config(self, name: str) -> ConfigResult:
        for c in self.configs:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["configs"] = [{**asdict(c), "status": RunStatus(c.status).value} for c in self.configs]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BenchResult":
        """Rebuild from a loaded ``--json`` file (to re-render a table, Markdown or chart)."""
        data = dict(data)
        data["configs"] = [ConfigResult(**{**c, "status": RunStatus(c["status"])})
                           for c in data["configs"]]
        return cls(**data)

    def json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str) + "\n"


NUM = (int, float)
OPT_NUM = (int, float, type(None))
OPT_STR = (str, type(None))
OPT_DICT = (dict, type(None))

# key -> allowed Python types after json.load (the documented schema, docs/benchmarks.md)
JSON_SCHEMA: dict[str, Any] = {
    "schema_version": int,
    "fastpipes_version": str,
    "torch_version": str,
    "command": str,
    "date": str,
    "machine": dict,
    "workload": {"family": str, "description": str, "spec": dict, "unit": str, "bound": str,
                 "flops": OPT_NUM},
    "settings": {"iters": int, "warmup": int, "threads": int, "max_time_s": OPT_NUM,
                 "device": str, "overrides": list},
    "limits": OPT_DICT,
    "interrupted": bool,
    "noise": OPT_DICT,
    "configs": [{
        "name": str, "recipe_source": OPT_STR, "baseline": bool, "status": str, "reason": str,
        "hardware_note": str, "build_s": OPT_NUM, "first_call_s": OPT_NUM, "compile_s": OPT_NUM,
        "compile_warm_s": OPT_NUM, "latency_s": OPT_DICT, "items": (int, type(None)),
        "bytes_per_item": OPT_NUM, "throughput": OPT_NUM, "unit": str,
        "speedup": OPT_NUM, "precision_class": OPT_STR, "peak_rss_mb": OPT_NUM, "cuda_max_allocated_mb": OPT_NUM,
        "achieved_gflops": OPT_NUM, "gflops_share": OPT_NUM, "achieved_gbps": OPT_NUM,
        "bandwidth_share": OPT_NUM, "fidelity": OPT_DICT, "report": OPT_DICT,
        "profile": OPT_DICT, "extra": dict,
        "wall_s": OPT_NUM, "traceback": str,
    }],
}
LIMITS_SCHEMA = {"gemm_gflops": NUM, "gemm_n": int, "bandwidth_gbps": NUM, "copy_mb": NUM,
                 "device": str}
LATENCY_SCHEMA = {"median": NUM, "min": NUM, "max": NUM, "runs": list}
# ok is null when the output could not be judged (note says why)
FIDELITY_SCHEMA = {"metrics": dict, "ok": (bool, type(None)), "thresholds": str,
                   "precision_class": str, "note": str}
STATUSES = tuple(s.value for s in RunStatus)
# keys added after version 1 was published: files written before them still conform
ADDED_KEYS = {"compile_warm_s", "precision_class", "interrupted", "note", "profile", "noise"}
NOISE_SCHEMA = {"noisy": bool, "evidence": list, "checked": list}


def _check(value: Any, schema: Any, where: str, problems: list[str]) -> None:
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            problems.append(f"{where}: expected an object, got {type(value).__name__}")
            return
        for key, sub in schema.items():
            if key not in value:
                if key not in ADDED_KEYS:
                    problems.append(f"{where}.{key}: missing")
            else:
                _check(value[key], sub, f"{where}.{key}", problems)
    elif isinstance(schema, list):
        if not isinstance(value, list):
            problems.append(f"{where}: expected a list, got {type(value).__name__}")
            return
        for i, item in enumerate(value):
            _check(item, schema[0], f"{where}[{i}]", problems)
    elif isinstance(value, bool) and schema in (int, NUM, OPT_NUM):
        problems.append(f"{where}: expected a number, got a bool")
    elif not isinstance(value, schema):
        problems.append(f"{where}: expected {schema}, got {type(value).__name__}")


def check_schema(data: dict) -> list[str]:
    """Every way `data` (a loaded bench JSON) departs from the documented schema; [] if none."""
    problems: list[str] = []
    _check(data, JSON_SCHEMA, "$", problems)
    if problems:
        return problems
    if data["schema_version"] != SCHEMA_VERSION:
        problems.append(f"$.schema_version: {data['schema_version']} != {SCHEMA_VERSION}")
    if data["limits"] is not None:
        _check(data["limits"], LIMITS_SCHEMA, "$.limits", problems)
    if data.get("noise") is not None:
        _check(data["noise"], NOISE_SCHEMA, "$.noise", problems)
    for i, c in enumerate(data["configs"]):
        if c["status"] not in STATUSES:
            problems.append(f"$.configs[{i}].status: {c['status']!r} not in {STATUSES}")
        if c["status"] == OK:
            _check(c["latency_s"], LATENCY_SCHEMA, f"$.configs[{i}].latency_s", problems)
        if c["fidelity"] is not None:
            _check(c["fidelity"], FIDELITY_SCHEMA, f"$.configs[{i}].fidelity", problems)
    if sum(c["baseline"] for c in data["configs"]) != 1:
        problems.append("$.configs: exactly one baseline configuration expected")
    return problems
