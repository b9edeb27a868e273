"""Live progress of a benchmark: configuration, phase, step, elapsed and ETA.

On a terminal: rich progress bars on stderr (one for the run, one for the configuration
being measured). Elsewhere (logs, CI): plain lines (fastpipes.progress).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from fastpipes.progress import Heartbeat, Lines, bar, terminal


class _Quiet:
    def start(self, name: str, steps: int) -> None: ...
    def event(self, ev: dict) -> None: ...
    def finish(self, name: str, status: str) -> None: ...
    def close(self) -> None: ...


class _Lines(_Quiet):
    """Plain lines for non-terminals: `[bench  1.2s] sdxl_bf16: timed 3/8`, one per phase
    change and, within a long phase, one about every 10 s (fastpipes.progress), also while
    the worker sends nothing (a first call that compiles for minutes: `...; still working`)."""

    def __init__(self):
        self.lines, self.name, self.phase, self.text = Lines("bench"), "", "", ""
        self.beat: Heartbeat | None = None

    def start(self, name: str, steps: int) -> None:
        self.name, self.phase, self.text = name, "", f"{name}: starting worker"
        self.lines.say(self.text)
        self.close()
        self.beat = Heartbeat(self.lines, lambda: f"{self.text}; still working").start()

    def event(self, ev: dict) -> None:
        self.text = f"{self.name}: {ev['phase']} ({ev['step']}/{ev['steps']})"
        if ev["phase"] != self.phase:
            self.phase = ev["phase"]
            self.lines.say(self.text)
        else:
            self.lines.tick(self.text)

    def finish(self, name: str, status: str) -> None:
        self.close()
        self.lines.say(f"{name}: {status}")

    def close(self) -> None:
        if self.beat is not None:
            self.beat.stop()
            self.beat = None


class _Rich(_Quiet):
    """Two bars: the whole run (steps of every configuration: its ETA) and the current one."""

    def __init__(self, progress, total_steps: int | None):
        self.p = progress
        self.overall = progress.add_task("[bold]all configurations[/]", total=total_steps)
        self.task, self.name, self.base, self.steps = None, "", 0, 0

    def start(self, name: str, steps: int) -> None:
        self.name, self.steps = name, steps
        if self.task is not None:
            self.p.remove_task(self.task)
        self.task = self.p.add_task(f"[cyan]{name}[/]: starting worker", total=steps)

    def event(self, ev: dict) -> None:
        self.p.update(self.task, completed=ev["step"], total=ev["steps"],
                      description=f"[cyan]{self.name}[/]: {ev['phase']}")
        self.p.update(self.overall, completed=self.base + ev["step"])

    def finish(self, name: str, status: str) -> None:
        self.base += self.steps  # a failed or cut configuration counts as done
        self.p.update(self.overall, completed=self.base)
        color = "green" if status == "ok" else "red"
        self.p.console.print(f"  {name}: [{color}]{status}[/]")


@contextmanager
def make_progress(enabled: bool = True, total_steps: int | None = None) -> Iterator[_Quiet]:
    if not enabled:
        yield _Quiet()
        return
    console = terminal()
    if console is None:
        lines = _Lines()
        try:
            yield lines
        finally:  # Ctrl-C between start and finish: no heartbeat may outlive the run
            lines.close()
        return
    from rich.progress import (BarColumn, MofNCompleteColumn, SpinnerColumn, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
               MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"),
               TimeRemainingColumn())
    with bar(console, *columns) as progress:
        yield _Rich(progress, total_steps)
