"""A `fastpipes run` with an OpenVINO recipe that gets SIGTERM ends like Ctrl-C (issue 26).

OpenVINO's CPU plugin (2026.4.1) installs its own alternate signal stack on the thread that
creates a CPU engine (one engine per ``openvino.Core``) and, when the engine is released, puts
back the stack it found. Engines released in the order they were made leave the thread's
alternate stack pointing at freed memory, and the next Python signal handler (CPython installs
them with SA_ONSTACK) segfaults in ``kill()``. The pass therefore keeps one Core per process;
these tests run each scenario in a subprocess, so a crash fails one test and not the whole run.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastpipes.openvino_probe import import_openvino

OV, WHY = import_openvino()
pytestmark = pytest.mark.skipif(OV is None, reason=f"OpenVINO does not import: {WHY}")
ROOT = Path(__file__).resolve().parents[1]

# An earlier OpenVINO pipeline is built and dropped (what recipe="auto" does with the
# candidates it tries, or a test module, a notebook, a service reloading its model), then a
# run with `recipe` gets SIGTERM on its second image. Prints the run's summary as JSON; a crash shows as a negative return code.
SIGTERM_RUN = """
import gc, json, os, signal, sys
import fastpipes
from fastpipes.bench.workloads import get_workload
from fastpipes.bench.workloads.base import WorkloadSpec
from fastpipes.run import run_sam
from fastpipes.sam.run import SamJob

images, out, recipe = sys.argv[1:4]
pipe = get_workload(WorkloadSpec("sam", size="tiny")).build()
fastpipes.accelerate(pipe, "sam_openvino_bf16")
del pipe
gc.collect()

real, calls = SamJob.process, []
def process(self, pipe, item):
    calls.append(item.key)
    if len(calls) == 2:
        os.kill(os.getpid(), signal.SIGTERM)
    return real(self, pipe, item)
SamJob.process = process
before = signal.getsignal(signal.SIGTERM)
s = run_sam(images, out, points="5,5", model="tiny", random_weights=True, recipe=recipe,
            progress=False)
print(json.dumps({"signal": s.signal, "exit_code": s.exit_code, "done": s.done,
                  "restored": signal.getsignal(signal.SIGTERM) is before}))
"""


def _images(folder: Path, n: int) -> Path:
    from PIL import Image

    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(np.full((60, 90, 3), 128, np.uint8)).save(folder / f"img{i}.png")
    return folder


def _python(code: str, *args: str, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "FASTPIPES_CACHE_DIR": str(cache),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=env, timeout=600)


def _crash(proc: subprocess.CompletedProcess) -> str:
    how = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else \
        f"exit status {proc.returncode}"
    return f"the subprocess ended with {how}; stderr tail:\n{proc.stderr[-3000:]}"


@pytest.mark.parametrize("recipe", ["none", "sam_openvino_bf16"])
def test_sigterm_ends_a_run_with_a_summary_after_an_openvino_pipeline_was_dropped(tmp_path,
                                                                                   recipe):
    out = tmp_path / "o"
    proc = _python(SIGTERM_RUN, str(_images(tmp_path / "pics", 3)), str(out), recipe,
                   cache=tmp_path / "cache")
    assert proc.returncode == 0, _crash(proc)
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary == {"signal": "SIGTERM", "exit_code": 143, "done": 1, "restored": True}
    written = json.loads((out / "summary.json").read_text())
    assert written["signal"] == "SIGTERM" and written["done"] == 1
