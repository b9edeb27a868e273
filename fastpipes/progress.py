"""Progress on stderr, one way for everything that runs long (benchmarks, jobs, training).

On a terminal: a rich progress bar (:func:`terminal` then :func:`bar`). Elsewhere (logs, CI,
tests): plain lines (:class:`Lines`), ``[label  elapsed] what is happening``, at most one
every :data:`EVERY_S` seconds unless something worth saying changes, so a log shows that work
goes on without being flooded. Disabled (``progress=False``): nothing at all.

Work that says nothing for long stretches (a first call that compiles, an image of
automatic masks, a worker process) runs under :func:`heartbeat`: a daemon thread that says
what is going on whenever :data:`EVERY_S` passed without a line. Heartbeats nest: the
innermost one speaks, and :func:`detail` adds to its line (e.g. ``12/64 prompt batches done``).

>>> lines = Lines("demo", every_s=3600)
>>> lines.tick("step 1/2")   # nothing: the first timed line comes `every_s` after the start
>>> lines.due()
False
"""
from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Callable, Iterator

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


# ---- heartbeat --------------------------------------------------------------------------

# the innermost running heartbeat of this thread / task (what detail() adds to)
_CURRENT: ContextVar["Heartbeat | None"] = ContextVar("fastpipes_heartbeat", default=None)


class Heartbeat:
    """A daemon thread that says `what` on `lines` whenever `lines.every_s` passed with no
    line said, until :meth:`stop`; quiet while a heartbeat started inside it runs (that one
    says what is going on). `what` may be a function, read at each line.
    """

    def __init__(self, lines: Lines, what: str | Callable[[], str]):
        self.lines, self.what, self.detail = lines, what, ""
        self.children = 0  # heartbeats running inside this one
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._parent: Heartbeat | None = None

    def text(self) -> str:
        what = self.what() if callable(self.what) else self.what
        return f"{what}; {self.detail}" if self.detail else what

    def start(self) -> "Heartbeat":
        self._parent = _CURRENT.get()
        if self._parent is not None:
            self._parent.children += 1
        _CURRENT.set(self)
        # the first wait is measured here, not in the thread, which may start late
        first = self.lines.every_s - (time.monotonic() - self.lines.last)
        self._thread = threading.Thread(target=self._run, args=(first,), daemon=True,
                                        name=f"fastpipes-heartbeat-{self.lines.label}")
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ends the thread (no line after this returns); idempotent."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        _CURRENT.set(self._parent)
        if self._parent is not None:
            self._parent.children -= 1

    def _run(self, wait: float) -> None:
        every = self.lines.every_s
        while not self._stop.wait(max(wait, 0.0)):
            try:
                if not self.children and self.lines.due():
                    self.lines.say(self.text())
            except Exception:  # noqa: BLE001  (progress must never break the work it reports)
                return
            wait = max(self.lines.last + every - time.monotonic(), every / 10)


@contextmanager
def heartbeat(label: str, what: str, enabled: bool = True,
              announce: bool | str = False) -> Iterator[Heartbeat | None]:
    """Say `[label  elapsed] what` every :data:`EVERY_S` seconds while the block runs.

    With `announce`, a line at the start too (`what`, or the text given). At the end, a
    line with the total time when the block was announced or outlasted the interval (and
    how it ended, if by an exception, which propagates). Disabled: nothing, no thread.

    >>> with heartbeat("compile", "unet: first call, compiling", enabled=False):
    ...     pass
    """
    if not enabled:
        yield None
        return
    lines = Lines(label, EVERY_S)  # read now: tests shorten the interval
    if announce:
        lines.say(announce if isinstance(announce, str) else what)
    beat = Heartbeat(lines, what).start()
    ended = "done"
    try:
        yield beat
    except BaseException as e:
        ended = f"stopped by {type(e).__name__}"
        raise
    finally:
        beat.stop()
        if announce or lines.elapsed >= lines.every_s:
            lines.say(f"{what}: {ended} after {lines.elapsed:.1f} s")


def detail(text: str) -> None:
    """What the innermost running heartbeat adds to its lines, e.g. ``12/64 prompt batches``
    (nothing when none runs: progress is off, or nobody listens)."""
    beat = _CURRENT.get()
    if beat is not None:
        beat.detail = text
