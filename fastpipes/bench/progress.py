"""Live progress of a benchmark: configuration, phase, step, elapsed and ETA.

On a terminal: rich progress bars on stderr (one for the run, one for the configuration
being measured). Elsewhere (logs, CI): one plain line per phase change.
"""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Iterator


class _Quiet:
    def start(self, name: str, steps: int) -> None: ...
    def event(self, ev: dict) -> None: ...
    def finish(self, name: str, status: str) -> None: ...


class _Lines(_Quiet):
    """Plain lines for non-terminals: `[bench 1.2s] sdxl_bf16: timed 3/8`."""

    def __init__(self):
        self.t0, self.name, self.phase = time.monotonic(), "", ""

    def _say(self, text: str) -> None:
        print(f"[bench {time.monotonic() - self.t0:6.1f}s] {text}", file=sys.stderr, flush=True)

    def start(self, name: str, steps: int) -> None:
        self.name, self.phase = name, ""
        self._say(f"{name}: starting worker")

    def event(self, ev: dict) -> None:
        if ev["phase"] != self.phase:
            self.phase = ev["phase"]
            self._say(f"{self.name}: {self.phase} ({ev['step']}/{ev['steps']})")

    def finish(self, name: str, status: str) -> None:
        self._say(f"{name}: {status}")


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
    from rich.console import Console

    console = Console(stderr=True)
    if not console.is_terminal:
        yield _Lines()
        return
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn,
                               TextColumn, TimeElapsedColumn, TimeRemainingColumn)

    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
               MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"),
               TimeRemainingColumn())
    # a slow refresh: the parent shares the CPU with the worker being timed
    with Progress(*columns, console=console, transient=False,
                  refresh_per_second=2) as progress:
        yield _Rich(progress, total_steps)
