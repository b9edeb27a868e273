"""Progress of a job: items done of total, items/s and ETA.

On a terminal: a rich progress bar on stderr. Elsewhere (logs, CI, tests): a plain line at
most every `every_s` seconds, and one at the end.
"""
from __future__ import annotations

import sys
import time


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "--"
    m, s = divmod(int(seconds + 0.5), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class JobProgress:
    """Counts results as they come and shows them.

    >>> with JobProgress(total=3, label="sam", enabled=False) as p:
    ...     p.update(ok=True)
    >>> p.done, p.failed
    (1, 0)
    """

    def __init__(self, total: int, label: str, enabled: bool = True, every_s: float = 10.0):
        self.total, self.label, self.enabled, self.every_s = total, label, enabled, every_s
        self.done = self.failed = 0
        self.t0 = self._last = time.monotonic()
        self._bar = self._task = None
        self._first: float | None = None
        self._shown = 0  # results counted in the last plain line

    def __enter__(self) -> "JobProgress":
        self.t0 = self._last = time.monotonic()
        if not self.enabled:
            return self
        from rich.console import Console

        console = Console(stderr=True)
        if console.is_terminal:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn,
                                       SpinnerColumn, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)
            from rich.text import Text

            class Rate(ProgressColumn):
                def render(self, task) -> Text:
                    speed = task.finished_speed or task.speed
                    return Text(f"{speed:.2f} items/s" if speed else "-- items/s")

            self._bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), Rate(), TimeElapsedColumn(),
                                 TextColumn("ETA"), TimeRemainingColumn(), console=console,
                                 refresh_per_second=2)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.label, total=self.total)
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
        elif self.enabled and self.done + self.failed != self._shown:
            self._line()

    @property
    def rate(self) -> float | None:
        """Items/s since the first result: start-up (building, compiling) is not counted."""
        n = self.done + self.failed
        elapsed = time.monotonic() - self._first if self._first is not None else 0.0
        return (n - 1) / elapsed if n > 1 and elapsed > 0 else None

    def update(self, ok: bool) -> None:
        if self._first is None:
            self._first = time.monotonic()
        if ok:
            self.done += 1
        else:
            self.failed += 1
        if self._bar is not None:
            failed = f" [red]{self.failed} failed[/]" if self.failed else ""
            self._bar.update(self._task, advance=1, description=f"{self.label}{failed}")
        elif self.enabled and time.monotonic() - self._last >= self.every_s:
            self._line()

    def note(self, text: str) -> None:
        """A message above the bar (or a plain line)."""
        if self._bar is not None:
            self._bar.console.print(text, markup=False, highlight=False)
        elif self.enabled:
            print(text, file=sys.stderr, flush=True)

    def _line(self) -> None:
        self._last = time.monotonic()
        n, rate = self.done + self.failed, self.rate
        self._shown = n
        eta = (self.total - n) / rate if rate else None
        failed = f", {self.failed} failed" if self.failed else ""
        print(f"[{self.label} {self._last - self.t0:7.1f}s] {n}/{self.total}{failed}, "
              f"{f'{rate:.2f}' if rate else '--'} items/s, ETA {_eta(eta)}", file=sys.stderr,
              flush=True)
