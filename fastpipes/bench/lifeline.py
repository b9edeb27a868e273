"""A benchmark worker dies with the benchmark that started it, however that one ends.

The parent runs ``python /path/to/lifeline.py PARENT_PID FD JOB.json``: this file is run by
path, not with ``-m``, because importing the fastpipes package takes seconds (torch), and a
parent killed during those seconds must not leave a worker behind. Before anything is
imported it ties the process to its parent twice:

- Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)``, so the kernel kills the worker the moment the
  parent dies (even SIGKILLed), whatever Python is doing then; then it checks the parent is
  still the one that started it (it may have died before the prctl);
- everywhere: a thread blocked reading FD, the read end of a pipe whose write end only the
  parent holds; EOF means the parent is gone (or done with the worker): exit at once.

Then it runs ``fastpipes.bench.worker`` on JOB.json as ``-m`` would. (Inductor's compile
workers, the worker's children, watch their own parent and exit when it is gone.)
"""
from __future__ import annotations

import os
import signal
import sys
import threading

EXIT_ORPHANED = 3  # the exit code of a worker whose parent went away


def die_with_parent(parent: int) -> bool:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux); False where
    that is not available. Exits at once if `parent` is already gone."""
    tied = False
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            tied = libc.prctl(1, int(signal.SIGKILL), 0, 0, 0) == 0  # 1: PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            tied = False
    if os.getppid() != parent:  # died (or was never ours) before the prctl took hold
        os._exit(EXIT_ORPHANED)
    return tied


def watch_pipe(fd: int) -> threading.Thread:
    """Exit the process when the pipe `fd` reads EOF (its writer, the parent, is gone)."""
    def watch() -> None:
        try:
            while os.read(fd, 1024):
                pass
        except OSError:
            pass
        os._exit(EXIT_ORPHANED)

    thread = threading.Thread(target=watch, daemon=True, name="fastpipes-lifeline")
    thread.start()
    return thread


def main(argv: list[str]) -> None:
    parent, fd, job = int(argv[0]), int(argv[1]), argv[2]
    die_with_parent(parent)
    watch_pipe(fd)
    # run as a script, sys.path[0] is this directory: its modules (profile.py) must not
    # shadow the standard library's
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    import runpy

    sys.argv = ["fastpipes.bench.worker", job]
    runpy.run_module("fastpipes.bench.worker", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
