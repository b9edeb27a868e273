"""A benchmark's workers and work directory never outlive it, however it ends (issue 22)."""
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from fastpipes.bench import lifeline

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not Path("/proc/self/cmdline").exists(),
                                reason="finds processes through /proc")


def _workers_of(parent: int) -> list[int]:
    """Live (not zombie) worker processes started by benchmark process `parent`."""
    out = []
    for entry in Path("/proc").iterdir():
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        if fields.get("State", "Z").startswith("Z"):
            continue
        worker = any(a.endswith(b"lifeline.py") or a == b"fastpipes.bench.worker" for a in args)
        if worker and (str(parent).encode() in args or fields.get("PPid") == str(parent)):
            out.append(int(entry.name))
    return out


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text().split("State:\t", 1)[1][0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _wait_until(check, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.mark.parametrize("when", ["start-up", "mid-row"])
def test_sigkill_to_bench_kills_its_worker_and_removes_its_work_directory(tmp_path, when):
    """Killed while the worker still imports torch (before it could watch anything), or
    while it runs a row: either way the worker goes with the benchmark."""
    (tmp_path / "cl.yaml").write_text("name: cl\nmemory_format: {}\n")
    cmd = [sys.executable, "-m", "fastpipes", "bench", "toy", "--size", "tiny", "--recipes",
           str(tmp_path / "cl.yaml"), "--option", "sleep_if_channels_last=600", "--iters", "1",
           "--warmup", "0", "--no-limits", "--no-warm-start", "--no-baseline"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        if when == "start-up":
            assert _wait_until(lambda: _workers_of(proc.pid) or proc.poll() is not None, 120)
        else:
            for line in proc.stderr:  # plain progress lines: stderr is not a terminal
                if "cl: first call" in line:
                    break
        workers = _workers_of(proc.pid)
        assert workers, f"no worker running ({proc.poll()})"
        workdirs = [d for d in Path(tempfile.gettempdir()).glob("fastpipes-bench-*")
                    if (d / "owner.pid").is_file()
                    and (d / "owner.pid").read_text().strip() == str(proc.pid)]
    finally:
        proc.kill()  # SIGKILL: no handler of the parent runs
        proc.wait()
    assert _wait_until(lambda: not any(map(_running, workers)), 10), "a worker outlived the bench"
    assert _wait_until(lambda: not any(d.exists() for d in workdirs), 10)


def test_a_worker_whose_parent_is_already_gone_never_starts(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    read_end, write_end = os.pipe()
    job = tmp_path / "job.json"
    job.write_text("{}")  # never read: the worker must not get that far
    t0 = time.monotonic()
    run = subprocess.run([sys.executable, lifeline.__file__, str(gone.pid), str(read_end),
                          str(job)], pass_fds=(read_end,), capture_output=True, text=True,
                         timeout=60)
    os.close(read_end)
    os.close(write_end)
    assert run.returncode == lifeline.EXIT_ORPHANED, run.stderr
    assert time.monotonic() - t0 < 30 and "fastpipes" not in run.stderr


def test_the_pipe_fallback_ends_a_worker_when_its_writer_goes():
    """Where PR_SET_PDEATHSIG does not exist, EOF on the lifeline pipe ends the worker."""
    read_end, write_end = os.pipe()
    code = ("import sys, time; sys.path.insert(0, sys.argv[2]); import lifeline; "
            "lifeline.watch_pipe(int(sys.argv[1])); print('watching', flush=True); time.sleep(600)")
    child = subprocess.Popen([sys.executable, "-I", "-c", code, str(read_end),
                              str(Path(lifeline.__file__).parent)],
                             pass_fds=(read_end,), stdout=subprocess.PIPE, text=True)
    os.close(read_end)
    try:
        assert child.stdout.readline().strip() == "watching"
        assert child.poll() is None
        os.close(write_end)  # what the parent's death does to the pipe
        assert child.wait(timeout=10) == lifeline.EXIT_ORPHANED
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
            child.wait()


def test_a_worker_killed_by_sigkill_is_reported_as_likely_out_of_memory():
    import signal as sig

    from fastpipes.bench.processes import death_reason

    killed = death_reason(-sig.SIGKILL, "accelerate", ["[transformers] a warning"])
    assert killed.startswith("worker died with exit code -9 during accelerate (killed by "
                             "SIGKILL, which the benchmark did not send: most likely the "
                             "kernel's out-of-memory killer; this machine has ")
    assert killed.endswith(": [transformers] a warning")
    crashed = death_reason(1, "timed", [])
    assert crashed == "worker died with exit code 1 during timed"
