"""Progress on stderr, one way for everything that runs long (benchmarks, jobs, training).

On a terminal: a rich progress bar (:func:`terminal` then :func:`bar`). Elsewhere (logs, CI,
tests): plain lines (:class:`Lines`), ``[label  elapsed] what is happening``, at most one
every :data:`EVERY_S` seconds unless something worth saying changes, so a log shows that work
goes on without being flooded. Disabled (``progress=False``): nothing at all.

>>> lines = Lines("demo", every_s=3600)
>>> lines.tick("step 1/2")   # nothing: the first timed line comes `every_s` after the start
>>> lines.due()
False
"""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Any, Iterator

EVERY_S = 10.0  # seconds between plain lines while nothing else is said


def eta_text(seconds: float | None) -> str:
    """`seconds` as m:ss or h:mm:ss ("--": not known yet)."""
    if seconds is None:
        return "--"
    m, s = divmod(int(seconds + 0.5), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Lines:
    """Plain progress lines on stderr for a log: `[label  12.3s] text`."""

    def __init__(self, label: str, every_s: float = EVERY_S, width: int = 6):
        self.label, self.every_s, self.width = label, every_s, width
        self.t0 = self.last = time.monotonic()  # when the last line was said

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def say(self, text: str) -> None:
        """A line now, with the time since the start."""
        self.last = time.monotonic()
        print(f"[{self.label} {self.last - self.t0:{self.width}.1f}s] {text}", file=sys.stderr,
              flush=True)

    def due(self) -> bool:
        """Whether :data:`EVERY_S` (`every_s`) has passed since the last line."""
        return time.monotonic() - self.last >= self.every_s

    def tick(self, text: str) -> None:
        """A line, if one is due: for what goes on steadily (steps, items)."""
        if self.due():
            self.say(text)

    def note(self, text: str) -> None:
        """A message, not a progress line (no time)."""
        print(f"[{self.label}] {text}", file=sys.stderr, flush=True)


def terminal() -> Any:
    """A rich Console on stderr if stderr is a terminal, else None (use :class:`Lines`)."""
    from rich.console import Console

    console = Console(stderr=True)
    return console if console.is_terminal else None


@contextmanager
def bar(console: Any, *columns: Any) -> Iterator[Any]:
    """A live rich Progress with `columns` on `console`; refreshed slowly, since the
    process shares the CPU with the work it reports on."""
    from rich.progress import Progress

    with Progress(*columns, console=console, refresh_per_second=2) as progress:
        yield progress
