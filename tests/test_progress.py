"""fastpipes.progress: the one way long work reports itself on stderr."""
from __future__ import annotations

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
