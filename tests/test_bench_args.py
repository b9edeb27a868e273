"""``fastpipes bench`` refuses, before any work, what it would otherwise guess at or find out
only after the run (issue 22): empty values and output paths that cannot be written."""
import argparse
from pathlib import Path

import pytest

from fastpipes.bench.outputs import check_outputs
from fastpipes.cli import bench


def run_cli(argv, monkeypatch, capsys) -> tuple[int, str]:
    monkeypatch.setattr(bench, "run_benchmark",  # the name cli/bench.py calls
                        lambda *a, **k: pytest.fail("nothing may run"))
    parser = argparse.ArgumentParser(prog="fastpipes")
    bench.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bench", "toy", "--size", "tiny", *argv])
    code = args.func(args)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--recipes", ""], "--recipes '': names nothing"),
    (["--recipes", ",,,"], "--recipes ',,,': names nothing"),
    (["--recipes", " , "], "--recipes ' , ': names nothing"),
    # an empty item among names is a typo (or an unset variable), not to be dropped quietly
    (["--recipes", "generic_fp32_fast,,generic_bf16"],
     "--recipes 'generic_fp32_fast,,generic_bf16': item 2 of 3 is empty"),
    (["--recipes", "generic_bf16,"], "--recipes 'generic_bf16,': item 2 of 2 is empty"),
    (["--recipes", " ,generic_bf16"], "--recipes ' ,generic_bf16': item 1 of 2 is empty"),
    (["--ablate", ""], "--ablate '': names nothing"),
    (["--model", ""], "--model '': names nothing"),
    (["--json", ""], "--json '': an empty path; give a file name, or leave out --json"),
    (["--markdown", " "], "--markdown ' ': an empty path"),
    (["--plot", ""], "--plot '': an empty path"),
    (["--set", "compile=3", "--set", "compile.mode=default"],  # with the default recipe set too
     "--set: <overrides>: compile.mode: 'compile.mode=default' sets a key inside what was set"),
])
def test_an_empty_value_is_refused_not_taken_for_the_default(argv, message, monkeypatch,
                                                             capsys):
    code, err = run_cli(argv, monkeypatch, capsys)
    assert code == 2 and message in err and "nothing was run" in err


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc")
def test_an_output_directory_that_cannot_be_created_is_refused_first(monkeypatch, capsys):
    code, err = run_cli(["--json", "/proc/nope/r.json", "--markdown", "/proc/r.md"],
                        monkeypatch, capsys)
    assert code == 2, err
    assert "--json /proc/nope/r.json: cannot create it: directory /proc/nope cannot be created" in err
    assert "--markdown /proc/r.md: cannot create it: directory /proc is not writable" in err


def test_directories_are_made_only_for_outputs_that_pass(tmp_path):
    ok, refused = tmp_path / "a" / "b" / "r.json", tmp_path / "c" / "d" / "x.xyz"
    assert check_outputs({"json": str(ok)}) == []
    assert ok.parent.is_dir() and not ok.exists()  # made, and nothing left in it
    problems = check_outputs({"json": str(tmp_path / "e" / "r.json"), "plot": str(refused)})
    assert problems and all("x.xyz" in p for p in problems)
    assert not (tmp_path / "e").exists() and not (tmp_path / "c").exists()
    assert list(ok.parent.iterdir()) == []  # no probe file left behind


def test_a_directory_made_by_someone_else_is_never_removed(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    problems = check_outputs({"plot": str(mine / "x.xyz")})
    assert problems and mine.is_dir()


@pytest.mark.parametrize("flag, name", [("--batch-size", "batch_size"), ("--iters", "iters"),
                                        ("--warmup", "warmup"), ("--threads", "threads"),
                                        ("--seed", "seed")])
def test_counts_are_bounded_by_the_bounds_table(flag, name, capsys):
    """Each count's limits come from fastpipes/bounds.py (docs/run.md's table), as `run`'s do."""
    from fastpipes.bounds import BOUNDS

    b = BOUNDS[name]
    parser = argparse.ArgumentParser(prog="fastpipes")
    bench.add_parser(parser.add_subparsers(dest="command", required=True))
    for bad in (b.lo - 1, b.hi + 1):
        with pytest.raises(SystemExit):
            parser.parse_args(["bench", "toy", flag, str(int(bad))])
        err = capsys.readouterr().err
        assert f"argument {flag}: {name} must be {b.allowed()} ({b.why}), got {int(bad)}" in err
    for good in (b.lo, b.hi):
        assert getattr(parser.parse_args(["bench", "toy", flag, str(int(good))]), name) == good
