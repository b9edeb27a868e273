"""``fastpipes bench`` through its argparse contract (add_parser + run), on the toy workload."""
import argparse
import json

import pytest

from fastpipes.bench import check_schema
from fastpipes.cli import bench


def parse(argv):
    parser = argparse.ArgumentParser(prog="fastpipes")
    bench.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_family_options_land_in_the_workload_spec():
    args = parse(["bench", "llama", "--prompt-len", "16", "--new-tokens", "4",
                  "--option", "dtype=bfloat16", "--size", "tiny"])
    assert bench._options(args) == {"prompt_len": 16, "new_tokens": 4, "dtype": "bfloat16"}
    args = parse(["bench", "sdxl", "--resolution", "512", "--steps", "2"])
    assert bench._options(args) == {"resolution": 512, "steps": 2}
    assert args.size == "full" and args.func is bench.run  # the default is the real model


@pytest.mark.parametrize("argv, message", [
    (["--max-time", "0"], "must be a finite number > 0, got 0"),
    (["--max-time", "nan"], "must be a finite number > 0, got nan"),
    (["--max-time", "inf"], "must be a finite number > 0, got inf"),
    (["--max-time", "soon"], "expected a number of seconds"),
    (["--set", "novalue"], "expected key=value"),
    (["--size", "huge"], "invalid choice"),
    # the counts are checked against fastpipes/bounds.py, as `fastpipes run`'s are
    (["--batch-size", "0"], "argument --batch-size: batch_size must be a whole number from 1 "
                            "to 1,024 (inputs per timed call"),
    (["--batch-size", "100000"], "batch_size must be a whole number from 1 to 1,024"),
    (["--threads", "-1"], "threads must be a whole number from 1 to 1,024 (torch threads in "
                          "each worker), got -1"),
    (["--iters", "0"], "iters must be a whole number from 1 to 10,000 (timed calls per "
                       "configuration), got 0"),
    (["--iters", "1000000"], "got 1000000"),
    (["--warmup", "-1"], "warmup must be a whole number from 0 to 1,000"),
    (["--seed", str(2**70)], "seed must be a whole number from 0 to"),
    (["--iters", "2.5"], "iters must be a whole number from 1 to 10,000 (timed calls per "
                         "configuration), got '2.5'"),
])
def test_bad_arguments_are_rejected(argv, message, capsys):
    with pytest.raises(SystemExit):
        parse(["bench", "toy", *argv])
    assert message in capsys.readouterr().err


def test_an_unparsable_option_stops_before_anything_runs(monkeypatch, capsys):
    import fastpipes.cli.bench

    monkeypatch.setattr(fastpipes.cli.bench, "run_benchmark",
                        lambda *a, **k: pytest.fail("nothing may run"))
    args = parse(["bench", "toy", "--size", "tiny", "--option", "x=[y", "--option", "z=1"])
    assert args.func(args) == 2
    assert "bad --option: x: cannot parse value '[y': malformed YAML" in capsys.readouterr().err


def test_an_unusable_device_stops_before_anything_runs(monkeypatch, capsys):
    import torch

    import fastpipes.cli.bench

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(fastpipes.cli.bench, "run_benchmark",
                        lambda *a, **k: pytest.fail("nothing may run"))
    args = parse(["bench", "toy", "--size", "tiny", "--device", "cuda"])
    assert args.func(args) == 2
    assert "--device cuda: " in capsys.readouterr().err


def test_bench_toy_writes_every_output(tmp_path, capsys):
    recipe = tmp_path / "toy_cl.yaml"
    recipe.write_text("# fastpipes bench toy --recipes toy_cl.yaml\nname: toy_cl\n"
                      "description: channels-last toy\nmemory_format: {}\n")
    out = tmp_path / "out"
    args = parse(["bench", "toy", "--size", "tiny", "--recipes", str(recipe),
                  "--set", "memory_format.convert_inputs=false", "--iters", "2", "--warmup", "0",
                  "--no-limits", "--quiet", "--threads", "1", "--json", str(out / "r.json"),
                  "--markdown", str(out / "r.md"), "--plot", str(out / "r.png")])
    assert args.func(args) == 0
    data = json.loads((out / "r.json").read_text())
    assert check_schema(data) == []
    assert data["settings"]["overrides"] == ["memory_format.convert_inputs=false"]
    assert data["settings"]["threads"] == 1 and data["limits"] is None
    cl = data["configs"][1]
    assert cl["name"] == "toy_cl" and cl["status"] == "ok" and cl["fidelity"]["ok"]
    assert "4-D inputs" not in cl["report"]["passes"][0]["changes"][0]  # the override applied
    lines = (out / "r.md").read_text().splitlines()
    # one row of the main table (the extra-metrics table has it as a column, not a row)
    assert sum(line.startswith("| toy_cl |") for line in lines) == 1
    assert (out / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "toy_cl" in capsys.readouterr().out  # the terminal table


def test_unknown_or_foreign_recipes_stop_before_any_run(tmp_path, capsys, monkeypatch):
    import fastpipes.cli.bench

    monkeypatch.setattr(fastpipes.cli.bench, "run_benchmark",  # the name cli/bench.py calls
                        lambda *a, **k: pytest.fail("nothing may run"))
    args = parse(["bench", "sam", "--size", "tiny", "--recipes", "sam_fp32_fsat,llama_woq_int8"])
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert "unknown recipe 'sam_fp32_fsat' (did you mean 'sam_fp32_fast'?)" in err
    assert "is for llama pipelines, not sam" in err and "nothing was run" in err


# ---- nothing lost: output paths, interrupts, killed parents (issue 14, items 2 and 4) -----

import os  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from fastpipes.bench.outputs import check_outputs, write_outputs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_bad_output_paths_stop_before_any_run(tmp_path, capsys, monkeypatch):
    import fastpipes.cli.bench

    monkeypatch.setattr(fastpipes.cli.bench, "run_benchmark",
                        lambda *a, **k: pytest.fail("nothing may run"))
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    args = parse(["bench", "toy", "--size", "tiny", "--json", str(tmp_path),
                  "--markdown", str(a_file / "r.md"), "--plot", str(tmp_path / "x.xyz")])
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert f"--json {tmp_path}: is an existing directory" in err
    assert f"--markdown {a_file / 'r.md'}: cannot create it: {a_file} is not a directory" in err
    assert "--plot" in err and "unsupported chart format .xyz; allowed: .png, .svg, .pdf" in err
    assert "nothing was run" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_output_directory_is_found_before_any_run(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert check_outputs({"json": str(ro / "r.json")}) == [
            f"--json {ro / 'r.json'}: cannot create it: directory {ro} is not writable"]
    finally:
        ro.chmod(0o700)


def test_a_file_that_still_cannot_be_written_goes_to_a_fallback(tmp_path, toy_result):
    blocker = tmp_path / "gone"
    blocker.write_text("a file where a directory was expected")  # appeared after the check
    wrote, failed = write_outputs(toy_result, {"json": str(tmp_path / "ok.json"),
                                               "markdown": str(blocker / "r.md")})
    assert wrote == [f"wrote {tmp_path / 'ok.json'}"]
    (line,) = failed
    assert f"could not write --markdown {blocker / 'r.md'}" in line and "instead" in line
    fallback = Path(line.rsplit("wrote ", 1)[1].removesuffix(" instead"))
    assert fallback.parent == Path(tempfile.gettempdir()) and "| fp32_eager" in fallback.read_text()
    fallback.unlink()


@pytest.fixture(scope="module")
def toy_result():
    from fastpipes.bench import WorkloadSpec, run_benchmark

    return run_benchmark(WorkloadSpec("toy", size="tiny"), [{"memory_format": {}}], iters=1,
                         warmup=0, limits=False, warm_start=False, progress=False)


def _workdirs_of(pid: int) -> list[Path]:
    out = []
    for d in Path(tempfile.gettempdir()).glob("fastpipes-bench-*"):
        try:
            if (d / "owner.pid").read_text().strip() == str(pid):
                out.append(d)
        except OSError:
            pass
    return out


def _start_slow_bench(tmp_path) -> subprocess.Popen:
    """A toy benchmark whose second row hangs; returns once that row's worker has started."""
    (tmp_path / "cl.yaml").write_text("name: cl\nmemory_format: {}\n")
    cmd = [sys.executable, "-m", "fastpipes", "bench", "toy", "--size", "tiny", "--recipes",
           str(tmp_path / "cl.yaml"), "--option", "sleep_if_channels_last=600", "--iters", "1",
           "--warmup", "0", "--no-limits", "--no-warm-start", "--json", str(tmp_path / "r.json"),
           "--markdown", str(tmp_path / "r.md")]
    # Ctrl-C as a terminal delivers it: a suite started in the background (`cmd &` in a
    # script) starts with SIGINT ignored, and children inherit that
    proc = subprocess.Popen(cmd, cwd=tmp_path, stderr=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in proc.stderr:  # plain progress lines: stderr is not a terminal
        if "cl: first call" in line:
            return proc
    pytest.fail(f"the benchmark never reached the hanging row: {proc.wait()}")


@pytest.mark.parametrize("sig, how", [(signal.SIGINT, "Ctrl-C"), (signal.SIGTERM, "SIGTERM")])
def test_an_interrupted_bench_keeps_its_rows_and_leaves_nothing_behind(tmp_path, sig, how):
    proc = _start_slow_bench(tmp_path)
    assert _workdirs_of(proc.pid)  # its work directory exists while it runs
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted; the rows measured so far were kept and written" in err
    data = json.loads((tmp_path / "r.json").read_text())
    assert check_schema(data) == [] and data["interrupted"] is True
    base, cl = data["configs"]
    assert base["status"] == "ok" and base["latency_s"]["median"] > 0
    assert cl["status"] == "cut" and cl["reason"] == f"interrupted ({how})"
    assert "INTERRUPTED" in (tmp_path / "r.md").read_text()
    assert _workdirs_of(proc.pid) == []


def test_a_killed_bench_leaves_no_work_directory(tmp_path):
    proc = _start_slow_bench(tmp_path)
    proc.kill()  # SIGKILL: no handler runs in the parent; its orphaned worker cleans up
    proc.wait()
    deadline = time.monotonic() + 15
    while _workdirs_of(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _workdirs_of(proc.pid) == []


def test_the_next_bench_sweeps_work_directories_of_dead_owners(tmp_path):
    from fastpipes.bench.processes import sweep_stale_workdirs

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale, live = tmp_path / "fastpipes-bench-stale", tmp_path / "fastpipes-bench-live"
    for d, pid in ((stale, dead.pid), (live, os.getpid())):
        d.mkdir()
        (d / "owner.pid").write_text(str(pid))
    assert sweep_stale_workdirs(str(tmp_path)) == [stale]
    assert not stale.exists() and live.exists()


@pytest.mark.parametrize("kwargs, message", [
    ({"max_time": float("nan")}, "max_time must be a finite number"),
    ({"threads": -1}, "threads must be a whole number from 1 to 1,024"),
    ({"iters": 0}, "iters must be a whole number from 1 to 10,000"),
    ({"warmup": 10**6}, "warmup must be a whole number from 0 to 1,000"),
])
def test_bad_numbers_are_refused_before_any_worker(kwargs, message):
    from fastpipes.bench import WorkloadSpec, run_benchmark
    from fastpipes.errors import BenchmarkError

    with pytest.raises(BenchmarkError, match=message):
        run_benchmark(WorkloadSpec("toy", size="tiny"), progress=False, **kwargs)


def test_batch_size_zero_and_a_missing_gpu_are_refused():
    import torch

    from fastpipes.bench import WorkloadSpec, run_benchmark
    from fastpipes.errors import BenchmarkError

    with pytest.raises(BenchmarkError, match="batch_size must be a whole number from 1"):
        run_benchmark(WorkloadSpec("toy", size="tiny", batch_size=0), progress=False)
    if not torch.cuda.is_available():
        with pytest.raises(BenchmarkError, match="CPU-only build|sees no CUDA device"):
            run_benchmark(WorkloadSpec("toy", size="tiny", device="cuda"), progress=False)
