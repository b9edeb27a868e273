"""Worker processes and their work directory: one fresh process per configuration.

A worker runs in its own session (so killing it kills the Inductor compile workers it
started) and dies with its parent, however the parent ends (SIGKILL included): see
bench/lifeline.py. A temporary work directory records its owner's pid and has a janitor, a
tiny process that removes it when its owner is gone (it waits for EOF on a pipe only the
owner holds); a directory whose janitor was killed too is swept by the next benchmark.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fastpipes.bench import lifeline
from fastpipes.bench.job import BenchJob
from fastpipes.bench.result import CUT, FAILED
from fastpipes.cache import CACHE_ENV, INDUCTOR_ENV

WORKDIR_PREFIX = "fastpipes-bench-"
OWNER_FILE = "owner.pid"


class Interrupted(KeyboardInterrupt):
    """SIGTERM, turned into what Ctrl-C raises so both stop a benchmark the same way."""


# ---- work directories ---------------------------------------------------------------------

def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_workdirs(root: str | None = None) -> list[Path]:
    """Remove work directories of benchmarks whose parent process is gone (killed with
    SIGKILL, or a crashed machine); returns what was removed. Only this user's."""
    removed = []
    for d in Path(root or tempfile.gettempdir()).glob(f"{WORKDIR_PREFIX}*"):
        try:
            if d.is_symlink() or not d.is_dir() or d.stat().st_uid != os.getuid():
                continue
            pid = int((d / OWNER_FILE).read_text().strip())
        except (OSError, ValueError):
            continue  # not ours, or still being created
        if not _alive(pid):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


# waits for EOF on stdin (its owner's end of the pipe), then removes the directory
_JANITOR = ("import os, shutil, signal, sys\n"
            "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
            "while os.read(0, 1024):\n    pass\n"
            "shutil.rmtree(sys.argv[1], ignore_errors=True)\n")
_janitors: dict[Path, subprocess.Popen] = {}


def make_workdir(workdir: str | Path | None) -> tuple[Path, bool]:
    """(directory, owned: remove it at the end with :func:`remove_workdir`). A temporary one
    records its owner's pid and gets a janitor that removes it if this process dies first."""
    if workdir is not None:
        wd = Path(workdir)
        wd.mkdir(parents=True, exist_ok=True)
        return wd, False
    sweep_stale_workdirs()
    wd = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX))
    (wd / OWNER_FILE).write_text(str(os.getpid()))
    try:
        _janitors[wd] = subprocess.Popen([sys.executable, "-I", "-c", _JANITOR, str(wd)],
                                         stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError:
        pass  # no janitor: a killed benchmark's directory waits for the next one's sweep
    return wd, True


def remove_workdir(wd: Path) -> None:
    """Remove an owned work directory and let its janitor go."""
    shutil.rmtree(wd, ignore_errors=True)
    janitor = _janitors.pop(wd, None)
    if janitor is not None:
        janitor.stdin.close()  # EOF: it finds nothing left to remove and exits
        try:
            janitor.wait(timeout=5)
        except subprocess.TimeoutExpired:
            janitor.kill()


# ---- one worker process --------------------------------------------------------------------

def _worker_env(cache: str | None = None) -> dict[str, str]:
    # the worker must import this very fastpipes, installed or not
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    if cache:  # this configuration's own caches: its first start is a cold one
        env[CACHE_ENV] = cache
        env[INDUCTOR_ENV] = str(Path(cache) / "inductor")  # its inductor/ part (cache.PARTS)
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(
        os.pathsep) if p])
    return env


def _kill(proc: subprocess.Popen) -> None:
    """Kill the worker and whatever it started (Inductor compile workers): its own group."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.wait()


def _start_worker(job_path: Path, log, cache: str | None) -> tuple[subprocess.Popen, int]:
    """The worker process, tied to this one (bench/lifeline.py), and the write end of its
    lifeline pipe: closing it, or this process dying, ends the worker."""
    read_end, write_end = os.pipe()
    try:
        proc = subprocess.Popen(
            [sys.executable, lifeline.__file__, str(os.getpid()), str(read_end), str(job_path)],
            stdout=log, stderr=subprocess.STDOUT, env=_worker_env(cache),
            start_new_session=True, pass_fds=(read_end,))
    except BaseException:
        os.close(write_end)
        raise
    finally:
        os.close(read_end)  # the worker's alone: EOF reaches it when write_end closes
    return proc, write_end


def _read_events(path: Path, offset: int) -> tuple[list[dict], int]:
    if not path.exists():
        return [], offset
    with open(path) as f:
        f.seek(offset)
        text = f.read()
    complete = text[: text.rfind("\n") + 1]
    events = [json.loads(line) for line in complete.splitlines() if line.strip()]
    return events, offset + len(complete)


def death_reason(returncode: int, phase: str, tail: list[str]) -> str:
    """Why a worker that wrote no result died, for the result table. A SIGKILL that the
    benchmark did not send (its --max-time cut is reported apart) is nearly always the
    kernel's out-of-memory killer, which leaves nothing in the worker's own output."""
    reason = f"worker died with exit code {returncode} during {phase}"
    if returncode == -signal.SIGKILL:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        reason += (f" (killed by SIGKILL, which the benchmark did not send: most likely the "
                   f"kernel's out-of-memory killer; this machine has {total:.0f} GB)")
    return reason + (": " + " | ".join(tail) if tail else "")


def run_worker(job: BenchJob, workdir: Path, max_time: float | None, on_event) -> dict:
    """Run one job in a fresh process; the result dict (status ok | failed | cut)."""
    tag = job.tag
    job = job.but(events=str(workdir / f"{tag}.events.jsonl"),
                  result=str(workdir / f"{tag}.result.json"))
    for stale in (job.events, job.result):  # a reused workdir must not feed old files
        Path(stale).unlink(missing_ok=True)
    job_path = workdir / f"{tag}.job.json"
    job_path.write_text(job.to_json())
    log_path = workdir / f"{tag}.log"
    t0 = time.monotonic()
    with open(log_path, "w") as log:
        proc, lifeline = _start_worker(job_path, log, job.cache)
        offset, cut, phase = 0, False, "start-up"

        def drain() -> str:
            nonlocal offset
            events, offset = _read_events(Path(job.events), offset)
            for ev in events:
                on_event(ev)
            return events[-1]["phase"] if events else phase

        try:
            while proc.poll() is None:
                phase = drain()
                if max_time is not None and time.monotonic() - t0 > max_time:
                    _kill(proc)
                    cut = True
                    break
                time.sleep(0.1)
        finally:  # Ctrl-C, SIGTERM or an error here: never leave a worker running
            if proc.poll() is None:
                _kill(proc)
            os.close(lifeline)
        phase = drain()
    wall = time.monotonic() - t0
    result_path = Path(job.result)
    if cut:
        return {"status": CUT, "wall_s": wall,
                "reason": f"cut: exceeded --max-time {max_time:g} s (during {phase}); "
                          "the worker process was killed"}
    if not result_path.exists():
        tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
        return {"status": FAILED, "wall_s": wall,
                "reason": death_reason(proc.returncode, phase, tail)}
    result = json.loads(result_path.read_text())
    result["wall_s"] = wall
    return result

