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
                  "--option", "cache=static", "--size", "tiny"])
    assert bench._options(args) == {"prompt_len": 16, "new_tokens": 4, "cache": "static"}
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
    (["--batch-size", "0"], "must be an integer >= 1, got 0"),
    (["--threads", "-1"], "must be an integer >= 1, got -1"),
    (["--iters", "0"], "must be an integer >= 1, got 0"),
    (["--warmup", "-1"], "must be an integer >= 0, got -1"),
    (["--iters", "2.5"], "expected an integer"),
])
def test_bad_arguments_are_rejected(argv, message, capsys):
    with pytest.raises(SystemExit):
        parse(["bench", "toy", *argv])
    assert message in capsys.readouterr().err


def test_an_unparsable_option_stops_before_anything_runs(monkeypatch, capsys):
    import fastpipes.bench

    monkeypatch.setattr(fastpipes.bench, "run_benchmark",
                        lambda *a, **k: pytest.fail("nothing may run"))
    args = parse(["bench", "toy", "--size", "tiny", "--option", "x=[y", "--option", "z=1"])
    assert args.func(args) == 2
    assert "bad --option: x: cannot parse value '[y': malformed YAML" in capsys.readouterr().err


def test_an_unusable_device_stops_before_anything_runs(monkeypatch, capsys):
    import torch

    import fastpipes.bench

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(fastpipes.bench, "run_benchmark",
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
    assert (out / "r.md").read_text().count("| toy_cl |") == 1
    assert (out / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "toy_cl" in capsys.readouterr().out  # the terminal table


def test_unknown_or_foreign_recipes_stop_before_any_run(tmp_path, capsys, monkeypatch):
    import fastpipes.bench

    monkeypatch.setattr(fastpipes.bench, "run_benchmark",  # the name cli/bench.py imports
                        lambda *a, **k: pytest.fail("nothing may run"))
    args = parse(["bench", "sam", "--size", "tiny", "--recipes", "sam_fp32_fsat,llama_woq_int8"])
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert "unknown recipe 'sam_fp32_fsat' (did you mean 'sam_fp32_fast'?)" in err
    assert "is for llama pipelines, not sam" in err and "nothing was run" in err
