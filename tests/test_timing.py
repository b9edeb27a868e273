"""fastpipes.timing: the one timer waits for the device before and after the call."""
from __future__ import annotations

import pytest
import torch

from fastpipes import timing


def _record(monkeypatch):
    log = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: log.append(("sync", device)))
    return log


def test_a_cuda_call_is_timed_between_two_synchronizes(monkeypatch):
    log = _record(monkeypatch)
    secs, out = timing.timed(lambda: log.append("call") or 7, "cuda:0")
    assert out == 7 and secs >= 0
    assert log == [("sync", "cuda:0"), "call", ("sync", "cuda:0")]


def test_a_cpu_call_never_synchronizes(monkeypatch):
    log = _record(monkeypatch)
    timing.timed(lambda: log.append("call"), "cpu")
    timing.timed(lambda: log.append("call"), torch.device("cpu"))
    assert log == ["call", "call"]


def test_median_time_warms_up_once_then_times_each_call_synchronized(monkeypatch):
    log = _record(monkeypatch)
    clock = iter([0.0, 1.0, 10.0, 13.0, 20.0, 22.0, 30.0, 31.5])  # warm-up, then 3 calls
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(clock))
    secs, out = timing.median_time(lambda: "out", 3, torch.device("cuda"))
    assert (secs, out) == (2.0, "out")  # median of 3.0, 2.0, 1.5
    assert len(log) == 2 * 4  # before and after each of the 4 calls


def test_auto_times_with_the_synchronizing_timer_on_the_pipeline_device(monkeypatch):
    import fastpipes.auto as auto

    class Stop(Exception):
        pass

    seen = []

    def measure_candidates(pipe, adapter, target, cfg, timer, *rest):
        seen.append(timer(lambda: "out"))
        raise Stop  # the search itself is not what this test is about

    monkeypatch.setattr(auto, "median_time", lambda fn, iters, device: (str(device), fn()))
    monkeypatch.setattr(auto, "_measure_candidates", measure_candidates)
    model = torch.nn.Linear(4, 4)
    with pytest.raises(Stop):
        auto.accelerate_auto(model, ["auto.cache=false"], example_inputs=(torch.randn(2, 4),))
    assert seen == [("cpu", "out")]
