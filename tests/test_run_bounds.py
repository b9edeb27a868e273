"""Hostile input to `fastpipes run` and accelerate(): every user-given size is bounded, every
number finite, every file a regular file of bounded size, refused before any work with an
error that names the setting, the value and what is allowed (issue 22)."""
import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import fastpipes
from fastpipes.bounds import BOUNDS, check_float, check_int, first_nonfinite, markdown_table
from fastpipes.cli.main import main
from fastpipes.errors import InputError, UnsupportedPipelineError

DOCS = Path(__file__).resolve().parents[1] / "docs" / "run.md"
SAM_TINY = ["--model", "tiny", "--random-weights", "--recipe", "none", "--quiet"]
LLAMA_TINY = ["--model", "tiny", "--random-weights", "--recipe", "none", "--quiet"]


@pytest.fixture
def no_build(monkeypatch):
    """Fail the test if a pipeline is built: the refusal must come before any work."""
    import fastpipes.run.jobs

    def worker(*a, **k):
        raise AssertionError("the pipeline was built for input that should have been refused")

    monkeypatch.setattr(fastpipes.run.jobs, "Worker", worker)


def images(folder: Path, sizes=((60, 90),)) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(folder / f"img{i}.png")
    return folder


def err_of(capsys) -> str:
    return capsys.readouterr().err


def cli(args: list[str]) -> int:
    """main()'s exit status; argparse's own refusals (a bad --points) exit 2."""
    try:
        return main(args)
    except SystemExit as e:
        return int(e.code)


# ------------------------------------------------------------------ the bounds themselves
def test_docs_table_is_the_bounds_table():
    assert markdown_table() in DOCS.read_text(), \
        "docs/run.md's bounds table is stale: paste fastpipes.bounds.markdown_table()"


def test_bounds_name_the_value_and_what_is_allowed():
    with pytest.raises(InputError, match=r"points_per_side must be a whole number from 1 to "
                                         r"256 .*got 100000"):
        check_int("points_per_side", 100000)
    for bad in (True, 2.0, "3", None):
        with pytest.raises(InputError, match="whole number"):
            check_int("steps", bad)
    with pytest.raises(InputError, match="multiple of 8"):
        check_int("width", 1004)
    with pytest.raises(InputError, match=r"guidance is nan \(not finite\)"):
        check_float("guidance", float("nan"))
    with pytest.raises(InputError, match="above 0"):
        check_float("temperature", 0.0)
    assert check_int("seed", 2**63 - 1) == 2**63 - 1
    with pytest.raises(InputError, match="seed must be"):
        check_int("seed", 2**70)
    torch.manual_seed(int(BOUNDS["seed"].hi))  # the bound is one torch accepts
    ok = [("a", torch.ones(3)), ("b", torch.tensor([1e38, 1e38, 1e38]))]  # sum overflows
    assert first_nonfinite(ok) is None
    assert first_nonfinite(ok + [("c", torch.tensor([0.0, float("inf")]))]) == "c"


# ------------------------------------------------------------------ sizes and numbers: SAM
@pytest.mark.parametrize("flags, message", [
    (["--points", "nan,nan"], r"--points: point 'nan,nan': x is nan \(not finite\)"),
    (["--points", "10,inf"], r"y is inf \(not finite\)"),
    (["--boxes", "0,0,nan,5"], r"box '0,0,nan,5': x1 is nan"),
    (["--points", "1e9,2"], r"from 0 to 16,384"),
    (["--everything", "--points-per-side", "100000"],
     r"points_per_side must be a whole number from 1 to 256.*got 100000"),
    (["--everything", "--points-per-batch", "0"], r"points_per_batch must be"),
    (["--everything", "--pred-iou-thresh", "nan"], r"pred_iou_thresh=nan"),
    (["--points", "5,5", "--seed", str(2**70)], r"--seed must be a whole number from 0"),
])
def test_sam_numbers_out_of_bounds_are_refused_before_work(tmp_path, capsys, no_build,
                                                           flags, message):
    pics = images(tmp_path / "pics")
    assert cli(["run", "sam", "--images", str(pics), *flags, "--out", str(tmp_path / "o"),
                *SAM_TINY]) in (1, 2)
    assert re.search(message, err_of(capsys))


def test_sam_image_shapes_and_prompt_files_are_checked(tmp_path, capsys):
    pics = images(tmp_path / "pics", sizes=((60, 90), (1, 5000)))
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps({"img0.png": [{"points": [[float("nan"), 3]]}],
                                   "img1.png": [{"points": [[1, 1]]}]}))
    out = tmp_path / "o"
    assert main(["run", "sam", "--images", str(pics), "--prompts", str(prompts), "--out",
                 str(out), *SAM_TINY]) == 1
    errors = {e["input"]: e["message"] for e in
              map(json.loads, (out / "errors.jsonl").read_text().splitlines())}
    assert "prompt points is nan (not finite)" in errors["img0.png"]
    assert "image height (the image is 5000x1) must be a whole number from 8" in errors["img1.png"]
    # a prompt file that is not a regular file is refused, not read
    assert main(["run", "sam", "--images", str(pics), "--prompts", "/dev/zero", "--out",
                 str(out), *SAM_TINY]) == 1
    assert "not a regular file" in err_of(capsys)


def test_nan_checkpoint_is_refused_naming_the_first_bad_weight(tmp_path, capsys):
    from fastpipes.sam.pipeline import build_sam

    state = build_sam("tiny").state_dict()
    key = "mask_decoder.iou_prediction_head.layers.0.weight"
    state[key][0, 0] = float("nan")
    ckpt = tmp_path / "nan.pth"
    torch.save(state, ckpt)
    pics = images(tmp_path / "pics")
    out = tmp_path / "o"
    assert main(["run", "sam", "--images", str(pics), "--points", "5,5", "--model", "tiny",
                 "--checkpoint", str(ckpt), "--recipe", "none", "--out", str(out),
                 "--quiet"]) == 1
    assert f"weight '{key}' holds NaN or infinite values" in err_of(capsys)
    assert not (out / "masks.json").exists()


# ------------------------------------------------------------------ prompt files (SDXL, Llama)
def test_prompt_files_must_be_regular_and_bounded(tmp_path, capsys, monkeypatch, no_build):
    base = ["--out", str(tmp_path / "o"), *LLAMA_TINY]
    assert main(["run", "llama", "--prompts", "/dev/zero", *base]) == 1
    assert "--prompts /dev/zero: not a regular file" in err_of(capsys)
    assert main(["run", "sdxl", "--prompts", "/dev/urandom", "--model", "tiny",
                 "--random-weights", "--out", str(tmp_path / "o2"), "--quiet"]) == 1
    assert "not a regular file" in err_of(capsys)
    big = tmp_path / "big.txt"
    big.write_text("a cat\n" * 50)
    monkeypatch.setitem(BOUNDS, "prompt_file_bytes", replace(BOUNDS["prompt_file_bytes"], hi=100))
    assert main(["run", "llama", "--prompts", str(big), *base]) == 1
    assert "at most 100 bytes" in err_of(capsys)
    monkeypatch.setitem(BOUNDS, "prompt_file_bytes", replace(BOUNDS["prompt_file_bytes"],
                                                             hi=1000))
    monkeypatch.setitem(BOUNDS, "prompt_lines", replace(BOUNDS["prompt_lines"], hi=10))
    assert main(["run", "llama", "--prompts", str(big), *base]) == 1
    assert "the number of lines must be a whole number from 1 to 10" in err_of(capsys)


def test_a_too_long_line_and_bad_per_line_settings_fail_only_their_line(tmp_path, capsys,
                                                                       no_build):
    prompts = tmp_path / "p.txt"
    long = "x" * (int(BOUNDS["prompt_chars"].hi) + 1)
    prompts.write_text(f'{long}\n{{"prompt": "a", "guidance": NaN}}\n'
                       '{"prompt": "b", "width": 1000000}\n{"prompt": "c", "seed": -1}\n')
    out = tmp_path / "o"
    assert main(["run", "sdxl", "--prompts", str(prompts), "--model", "tiny",
                 "--random-weights", "--out", str(out), "--quiet"]) == 1
    errors = [json.loads(x)["message"] for x in (out / "errors.jsonl").read_text().splitlines()]
    assert "line 1: 100,001 characters; a line may have at most 100,000" in errors[0]
    assert "line 2: guidance is nan (not finite)" in errors[1]
    assert "line 3: width must be a whole number from 8 to 4,096, a multiple of 8" in errors[2]
    assert "line 4: seed must be" in errors[3]


@pytest.mark.parametrize("family, flags, message", [
    ("sdxl", ["--width", "1000000"], r"width must be a whole number from 8 to 4,096"),
    ("sdxl", ["--guidance", "nan"], r"guidance is nan \(not finite\)"),
    ("sdxl", ["--steps", "100000"], r"steps must be a whole number from 1 to 1,000"),
    ("llama", ["--max-new-tokens", "1000000000"],
     r"--max-new-tokens must be a whole number from 1 to 131,071 .*context of 131,072"),
    ("llama", ["--sample", "--temperature", "nan"], r"--temperature is nan"),
    ("llama", ["--top-p", "1.5"], r"--top-p must be a finite number above 0 and at most 1"),
    ("llama", ["--seed", str(2**70)], r"--seed must be a whole number from 0 to"),
])
def test_sdxl_llama_settings_are_bounded(tmp_path, capsys, no_build, family, flags, message):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\n")
    assert main(["run", family, "--prompts", str(prompts), "--model", "tiny",
                 "--random-weights", *flags, "--out", str(tmp_path / "o"), "--quiet"]) == 1
    assert re.search(message, err_of(capsys))


def test_a_prompt_longer_than_the_context_fails_its_line(tmp_path, monkeypatch):
    from fastpipes.llama import pipeline as llama_pipes
    from fastpipes.run import run_llama

    small = dict(llama_pipes.LLAMA_SHAPES["tiny"], max_position_embeddings=32)
    monkeypatch.setitem(llama_pipes.LLAMA_SHAPES, "tiny", small)
    prompts = tmp_path / "p.txt"
    prompts.write_text("hi\n" + "y" * 40 + "\n")
    out = tmp_path / "o"
    summary = run_llama(prompts, out, model="tiny", random_weights=True, max_new_tokens=4,
                        recipe="none", progress=False)
    assert (summary.done, summary.failed) == (1, 1)
    (err,) = [json.loads(x) for x in (out / "errors.jsonl").read_text().splitlines()]
    assert "the prompt's tokens must be a whole number from 1 to 28" in err["message"]
    assert "got 41" in err["message"] and "context is 32 tokens" in err["message"]
    with pytest.raises(InputError, match="from 1 to 31 .*context of 32"):
        run_llama(prompts, out, model="tiny", random_weights=True, max_new_tokens=32,
                  recipe="none", progress=False)


# ------------------------------------------------------------------ devices
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without CUDA devices")
@pytest.mark.parametrize("family, device", [("llama", "cuda:7"), ("sdxl", "xpu"),
                                            ("sam", "nope")])
def test_run_checks_the_device_like_bench(tmp_path, capsys, no_build, family, device):
    pics = images(tmp_path / "pics")
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\n")
    inputs = ["--images", str(pics), "--points", "5,5"] if family == "sam" else \
        ["--prompts", str(prompts)]
    assert main(["run", family, *inputs, "--model", "tiny", "--random-weights",
                 "--device", device, "--out", str(tmp_path / "o"), "--quiet"]) == 1
    err = err_of(capsys)
    assert f"--device {device}:" in err and "Traceback" not in err


# ------------------------------------------------------------------ SIGTERM and the --out lock
def _signal_on_second(monkeypatch, job_cls, signum):
    real, calls = job_cls.process, []

    def process(self, pipe, item):
        calls.append(item.key)
        if len(calls) == 2:
            os.kill(os.getpid(), signum)
        return real(self, pipe, item)

    monkeypatch.setattr(job_cls, "process", process)


def test_sigterm_ends_a_sam_run_like_ctrl_c_with_a_summary(tmp_path, monkeypatch):
    from fastpipes.run import run_sam
    from fastpipes.sam.run import SamJob

    pics = images(tmp_path / "pics", sizes=((60, 90),) * 3)
    out = tmp_path / "o"
    before = signal.getsignal(signal.SIGTERM)
    _signal_on_second(monkeypatch, SamJob, signal.SIGTERM)
    summary = run_sam(pics, out, points="5,5", model="tiny", random_weights=True,
                      recipe="none", progress=False)
    assert summary.interrupted and summary.signal == "SIGTERM" and summary.exit_code == 143
    assert summary.done == 1 and "interrupted by SIGTERM" in str(summary)
    written = json.loads((out / "summary.json").read_text())
    assert written["signal"] == "SIGTERM" and written["done"] == 1
    assert len(json.loads((out / "masks.json").read_text())["images"]) == 1
    assert signal.getsignal(signal.SIGTERM) is before  # put back


def test_sigterm_ends_a_llama_run_the_same_way(tmp_path, monkeypatch):
    from fastpipes.run import run_llama
    from fastpipes.llama.run import LlamaJob

    prompts = tmp_path / "p.txt"
    prompts.write_text("a\nb\nc\n")
    _signal_on_second(monkeypatch, LlamaJob, signal.SIGTERM)
    summary = run_llama(prompts, tmp_path / "o", model="tiny", random_weights=True,
                        max_new_tokens=2, recipe="none", progress=False)
    assert (summary.signal, summary.exit_code, summary.done) == ("SIGTERM", 143, 1)
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["interrupted"]


HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.ftruncate(fd, 0); os.write(fd, f"{os.getpid()}\\n".encode())
print("held", flush=True)
time.sleep(60)
"""


def test_a_second_run_on_the_same_out_fails_at_once_naming_the_holder(tmp_path, capsys,
                                                                      monkeypatch):
    pics = images(tmp_path / "pics")
    out = tmp_path / "o"
    lock = out / ".fastpipes" / "lock"
    lock.parent.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        import fastpipes.run.jobs
        real_worker = fastpipes.run.jobs.Worker
        monkeypatch.setattr(fastpipes.run.jobs, "Worker", lambda *a, **k: 1 / 0)
        args = ["run", "sam", "--images", str(pics), "--points", "5,5", "--out", str(out),
                *SAM_TINY]
        assert main(args) == 1
        err = err_of(capsys)
        assert f"is in use by another fastpipes run (pid {holder.pid};" in err
        assert "give another --out" in err
    finally:
        holder.kill()
        holder.wait()
    # the holder is dead: its pid is still in the file, and the lock does not block
    assert lock.read_text().strip() == str(holder.pid)
    monkeypatch.setattr(fastpipes.run.jobs, "Worker", real_worker)
    assert main(args) == 0
    assert lock.read_text().strip() == str(os.getpid())


# ------------------------------------------------------------------ accelerate() arguments
def test_accelerate_refuses_bad_argument_types_and_leaves_the_model(monkeypatch):
    from fastpipes.sam.pipeline import build_sam

    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(InputError, match=r"overrides must be None, a 'key=value' string.*"
                                         r"got int 123"):
        fastpipes.accelerate(model, {"memory_format": {}}, overrides=123)
    with pytest.raises(InputError, match=r"example_inputs must be .*got str 'not a tensor'"):
        fastpipes.accelerate(model, "auto", example_inputs="not a tensor")
    with pytest.raises(InputError, match=r"fails on its example inputs .*RuntimeError"):
        fastpipes.accelerate(model, "auto", example_inputs=(torch.zeros(2, 3),),
                             overrides=["auto.cache=false"])
    assert type(model[0]) is torch.nn.Linear
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())

    sam = build_sam("tiny")
    sam.image_encoder = None
    with pytest.raises(UnsupportedPipelineError, match=r"component 'image_encoder' is "
                                                       r"NoneType, not a torch.nn.Module"):
        fastpipes.accelerate(sam, "sam_fp32_fast", overrides=["compile.enabled=false"])
    assert sam.image_encoder is None


def test_weights_from_a_model_dir_are_checked_too(tmp_path):
    """The same check for --model DIR (Llama here; SDXL names its components), not only
    for SAM checkpoints; random weights are not checked (they are made finite)."""
    from fastpipes.llama.pipeline import build_llama
    from fastpipes.llama.run import LlamaJob, LlamaPipe

    model = build_llama("tiny", seed=0)
    pipe = LlamaPipe(model, tokenizer=None)
    job = LlamaJob(out=str(tmp_path), prompts="p", model=str(tmp_path))
    job.check_weights(pipe)  # finite: nothing to say
    key = next(k for k in model.state_dict() if k.endswith("layers.1.mlp.up_proj.weight"))
    with torch.no_grad():
        model.get_parameter(key)[3, 4] = float("-inf")
    with pytest.raises(InputError, match=rf"--model {tmp_path}: weight '{re.escape(key)}' "
                                         "holds NaN or infinite values"):
        job.check_weights(pipe)
    replace(job, random_weights=True, model="tiny").check_weights(pipe)
