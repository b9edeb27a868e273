"""Progress of a job: items done of total, items/s and ETA.

On a terminal: a rich progress bar on stderr. Elsewhere (logs, CI, tests): a plain line at
most every `every_s` seconds, and one at the end (fastpipes.progress); a heartbeat says it
also while no result comes (building, compiling, a long item), with what the item's work
adds (:func:`fastpipes.progress.detail`, e.g. SAM's prompt batches).
"""
from __future__ import annotations

import sys
import time
from contextlib import ExitStack

from fastpipes.progress import EVERY_S, Heartbeat, Lines, bar, eta_text, terminal


class JobProgress:
    """Counts results as they come and shows them.

    >>> with JobProgress(total=3, label="sam", enabled=False) as p:
    ...     p.update(ok=True)
    >>> p.done, p.failed
    (1, 0)
    """

    def __init__(self, total: int, label: str, enabled: bool = True, every_s: float = EVERY_S):
        self.total, self.label, self.enabled, self.every_s = total, label, enabled, every_s
        self.done = self.failed = 0
        self._lines = Lines(label, every_s, width=7)
        self._stack = ExitStack()
        self._bar = self._task = None
        self._beat: Heartbeat | None = None
        self._first: float | None = None
        self._shown = 0  # results counted in the last plain line

    def __enter__(self) -> "JobProgress":
        self._lines = Lines(self.label, self.every_s, width=7)
        if not self.enabled:
            return self
        console = terminal()
        if console is not None:
            from rich.progress import (BarColumn, MofNCompleteColumn, ProgressColumn,
                                       SpinnerColumn, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)
            from rich.text import Text

            class Rate(ProgressColumn):
                def render(self, task) -> Text:
                    speed = task.finished_speed or task.speed
                    return Text(f"{speed:.2f} items/s" if speed else "-- items/s")

            self._bar = self._stack.enter_context(bar(
                console, SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                MofNCompleteColumn(), Rate(), TimeElapsedColumn(), TextColumn("ETA"),
                TimeRemainingColumn()))
            self._task = self._bar.add_task(self.label, total=self.total)
        else:
            self._beat = Heartbeat(self._lines, self._text).start()
        return self

    def __exit__(self, *exc) -> None:
        if self._beat is not None:
            self._beat.stop()
        if self._bar is not None:
            self._stack.__exit__(*exc)
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
        if self._beat is not None:
            self._beat.detail = ""  # that item's; the next one says its own
        if self._bar is not None:
            failed = f" [red]{self.failed} failed[/]" if self.failed else ""
            self._bar.update(self._task, advance=1, description=f"{self.label}{failed}")
        elif self.enabled and self._lines.due():
            self._line()

    def note(self, text: str) -> None:
        """A message above the bar (or a plain line)."""
        if self._bar is not None:
            self._bar.console.print(text, markup=False, highlight=False)
        elif self.enabled:
            print(text, file=sys.stderr, flush=True)

    def _line(self) -> None:
        self._shown = self.done + self.failed
        self._lines.say(self._text())

    def _text(self) -> str:
        n, rate = self.done + self.failed, self.rate
        eta = (self.total - n) / rate if rate else None
        failed = f", {self.failed} failed" if self.failed else ""
        return (f"{n}/{self.total}{failed}, {f'{rate:.2f}' if rate else '--'} items/s, "
                f"ETA {eta_text(eta)}")
