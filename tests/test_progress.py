"""fastpipes.progress: the one way long work reports itself on stderr."""
from __future__ import annotations

import threading
import time

import pytest

from fastpipes import progress
from fastpipes.bench.progress import make_progress
from fastpipes.run.progress import JobProgress


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_lines_say_at_most_one_timed_line_every_so_often(monkeypatch, capsys):
    clock = Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock)
    lines = progress.Lines("job", every_s=10)
    lines.tick("a")  # nothing yet: the first timed line is due 10 s after the start
    clock.now += 10.5
    lines.tick("b")
    clock.now += 3
    lines.tick("c")  # too soon
    lines.say("d")  # said now, whatever the time
    lines.note("e")
    assert capsys.readouterr().err.splitlines() == ["[job   10.5s] b", "[job   13.5s] d",
                                                    "[job] e"]


def test_eta_text():
    assert [progress.eta_text(s) for s in (None, 59.6, 3725)] == ["--", "1:00", "1:02:05"]


def test_bench_lines_say_each_phase_and_a_heartbeat_within_a_long_one(monkeypatch, capsys):
    clock = Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock)
    with make_progress(True, 8) as prog:  # stderr is no terminal under pytest: plain lines
        prog.start("sam_bf16", 8)
        for step, secs in ((1, 1), (2, 1), (3, 12)):
            clock.now += secs
            prog.event({"phase": "timed", "step": step, "steps": 8})
        prog.finish("sam_bf16", "ok")
    assert capsys.readouterr().err.splitlines() == [
        "[bench    0.0s] sam_bf16: starting worker", "[bench    1.0s] sam_bf16: timed (1/8)",
        "[bench   14.0s] sam_bf16: timed (3/8)", "[bench   14.0s] sam_bf16: ok"]


def test_job_lines_every_so_often_and_at_the_end(monkeypatch, capsys):
    clock = Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock)
    monkeypatch.setattr("fastpipes.run.progress.time.monotonic", clock)
    with JobProgress(total=4, label="sam", every_s=10) as p:
        for secs in (1, 1, 11, 1):
            clock.now += secs
            p.update(ok=secs != 11)
    err = capsys.readouterr().err.splitlines()
    assert err == ["[sam    13.0s] 3/4, 1 failed, 0.17 items/s, ETA 0:06",
                   "[sam    14.0s] 4/4, 1 failed, 0.23 items/s, ETA 0:00"]


def beat_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("[beat")]


def test_heartbeat_speaks_while_a_block_outlasts_the_interval_then_says_its_time(monkeypatch,
                                                                                 capsys):
    monkeypatch.setattr(progress, "EVERY_S", 0.05)
    with progress.heartbeat("beat", "working"):
        time.sleep(0.2)
        progress.detail("batch 2/3")
        time.sleep(0.15)
    err = beat_lines(capsys.readouterr().err)
    assert err[0].endswith("] working") and any(e.endswith("working; batch 2/3") for e in err)
    assert err[-1].startswith("[beat") and "working: done after" in err[-1]
    time.sleep(0.15)  # the thread has stopped: nothing more
    assert capsys.readouterr().err == ""
    assert not [t for t in threading.enumerate() if t.name.startswith("fastpipes-heartbeat")]


def test_heartbeat_disabled_says_nothing_and_starts_no_thread(monkeypatch, capsys):
    monkeypatch.setattr(progress, "EVERY_S", 0.01)
    before = threading.active_count()
    with progress.heartbeat("beat", "working", enabled=False, announce=True) as beat:
        assert beat is None and threading.active_count() == before
        progress.detail("ignored")  # no heartbeat runs: nothing to add to
        time.sleep(0.05)
    assert capsys.readouterr().err == ""


def test_heartbeat_lets_an_exception_through_and_says_how_it_ended(monkeypatch, capsys):
    monkeypatch.setattr(progress, "EVERY_S", 0.05)
    with pytest.raises(ValueError, match="bad input"):
        with progress.heartbeat("beat", "working", announce=True):
            raise ValueError("bad input")
    err = beat_lines(capsys.readouterr().err)
    assert err[0] == "[beat    0.0s] working"
    assert "working: stopped by ValueError after" in err[-1]
    time.sleep(0.1)
    assert capsys.readouterr().err == ""


def test_nested_heartbeats_the_inner_one_speaks(monkeypatch, capsys):
    monkeypatch.setattr(progress, "EVERY_S", 0.05)
    with progress.heartbeat("outer", "all of it"):
        with progress.heartbeat("beat", "one part"):
            time.sleep(0.2)
    err = capsys.readouterr().err.splitlines()
    inner = [i for i, line in enumerate(err) if line.startswith("[beat")]
    # while the inner block ran (up to its last line) the outer one kept quiet
    assert inner and not [line for line in err[inner[0]:inner[-1]] if line.startswith("[outer")]


def test_job_lines_go_on_while_no_result_comes_with_what_the_item_adds(capsys):
    with JobProgress(total=2, label="sam", every_s=0.05) as p:
        progress.detail("automatic masks, crop 1/1: 3/64 prompt batches done")
        time.sleep(0.2)
        p.update(ok=True)
    err = capsys.readouterr().err.splitlines()
    assert any(line.endswith("0/2, -- items/s, ETA --; automatic masks, crop 1/1: 3/64 prompt "
                             "batches done") for line in err)
    assert err[-1].endswith("1/2, -- items/s, ETA --")  # the item's detail ended with it
    assert progress._CURRENT.get() is None  # the job's heartbeat is gone
