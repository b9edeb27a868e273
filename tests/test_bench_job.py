"""bench/job.py: the typed job the parent hands a worker, through a JSON file."""
from __future__ import annotations

import json

import pytest

from fastpipes.bench.job import BenchJob
from fastpipes.bench.workloads import WorkloadSpec


def _job(**changes) -> BenchJob:
    spec = WorkloadSpec("sam", size="tiny", device="cpu", batch_size=2, seed=3,
                        options={"points": 2, "workload": "click"})
    job = BenchJob(kind="config", tag="c1", spec=spec, threads=2, iters=4, warmup=2,
                   profile=True, recipe={"name": "custom", "attention": {"backend": "sdpa"}},
                   reference="/w/reference.pt", cache="/w/cache-c1",
                   auto_overrides=["auto.budget_s=5"], events="/w/c1.events.jsonl",
                   result="/w/c1.result.json")
    return job.but(**changes)


@pytest.mark.parametrize("job", [_job(), _job(kind="warm", tag="c1-warm", recipe="auto"),
                                 _job(kind="limits", recipe=None, limits_quick=True)])
def test_a_job_round_trips_through_json_unchanged(job):
    back = BenchJob.from_json(job.to_json())
    assert back == job
    assert isinstance(back.spec, WorkloadSpec) and back.spec.options == {"points": 2,
                                                                         "workload": "click"}
    assert json.loads(job.to_json())["spec"]["device"] == "cpu"


def test_the_device_is_carried_once_in_the_spec():
    data = _job().to_dict()
    assert "device" not in data and data["spec"]["device"] == "cpu"
    assert _job(spec=WorkloadSpec("toy", device="cuda:1")).device == "cuda:1"


def test_steps_count_what_the_worker_reports():
    assert _job().steps == 3 + 1 + 2 + 4  # build, accelerate, first call, warm-up, timed
    assert _job(recipe=None).steps == 3 + 2 + 4  # the baseline applies nothing
    assert _job(kind="warm").steps == 3 and _job(kind="limits").steps == 1


def test_a_key_the_job_does_not_have_is_refused():
    data = _job().to_dict()
    with pytest.raises(AssertionError, match="device"):
        BenchJob.from_dict({**data, "device": "cpu"})
