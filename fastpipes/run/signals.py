"""SIGTERM handled like Ctrl-C while a ``fastpipes run`` job runs.

A job stopped by ``kill`` (a scheduler's time limit, ``docker stop``, systemd) should end the
way Ctrl-C ends it: the current item abandoned, everything finished kept, the summary
written, and an exit status that says which signal it was. Inside :class:`Interrupts`,
SIGINT and SIGTERM raise :class:`Interrupted` (a KeyboardInterrupt, so the job loop's one
``except KeyboardInterrupt`` covers both); after :meth:`Interrupts.hold`, a further signal
is only remembered, so writing the summary is not cut short. Handlers are put back on exit.
A signal the caller ignores (``SIG_IGN``, e.g. under ``nohup``) stays ignored.

>>> with Interrupts() as signals:       # doctest: +SKIP
...     run_the_items()                 # a SIGTERM here raises Interrupted
...     signals.hold()
...     write_the_summary()             # a SIGTERM here is only noted
>>> signals.caught                      # doctest: +SKIP
'SIGTERM'
"""
from __future__ import annotations

import signal
import threading
from typing import Any

WATCHED = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A job interrupted by a signal; ``signal`` is its name (SIGINT, SIGTERM)."""

    def __init__(self, name: str):
        super().__init__(name)
        self.signal = name


class Interrupts:
    """Scope in which SIGINT and SIGTERM raise Interrupted (see the module docstring).
    Off the main thread Python allows no handlers: Ctrl-C then works as it always does."""

    def __init__(self) -> None:
        self.caught = ""  # the first signal's name
        self.holding = False
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> "Interrupts":
        if threading.current_thread() is threading.main_thread():
            for sig in WATCHED:
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        self.caught = self.caught or name
        if not self.holding:
            raise Interrupted(name)

    def hold(self) -> None:
        """From now on a signal is noted, not raised."""
        self.holding = True

    def __exit__(self, *exc: Any) -> None:
        for sig, previous in self.previous.items():
            signal.signal(sig, previous)
