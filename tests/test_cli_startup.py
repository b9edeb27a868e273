"""What ``fastpipes`` imports before it has parsed its arguments: ``--help``, ``--version``,
a mistyped command and the light sub-commands' help must not import torch (about 1.1 s of a
1.5 s start) nor omegaconf and numpy; the passes and families register themselves when a
registry is first read (fastpipes/registry.py)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fastpipes.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "numpy", "omegaconf", "diffusers", "transformers", "openvino", "ray")


def _python(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)


def _imported(stderr: str) -> set[str]:
    """The modules ``-X importtime`` reports (its lines: 'import time: self | total | name')."""
    return {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines()
            if line.startswith("import time:") and line.count("|") == 2}


@pytest.mark.parametrize("argv, rc, says", [
    (["--help"], 0, "benchmark recipes against FP32 eager"),
    (["--version"], 0, "fastpipes "),
    (["benhc"], 2, "invalid choice: 'benhc'"),
    (["cache", "--help"], 0, "delete parts of the cache"),
    (["info", "--help"], 0, "--measure"),
])
def test_parsing_imports_no_heavy_library(argv, rc, says):
    p = _python("-X", "importtime", "-m", "fastpipes", *argv)
    assert p.returncode == rc, p.stderr[-2000:]
    assert says in p.stdout + p.stderr
    imported = _imported(p.stderr)
    assert "fastpipes.cli.main" in imported  # the check reads importtime's lines at all
    assert not [m for m in HEAVY if m in imported], f"fastpipes {' '.join(argv)} imported them"


def test_the_help_is_the_same_without_building_the_sub_commands():
    from fastpipes.cli import SUBCOMMANDS
    from fastpipes.cli.main import build_parser

    full = build_parser().format_help()  # every sub-command's module imported, parser built
    light = build_parser("").format_help()  # names and help lines only
    assert light == full
    assert all(f"    {name:<10}{line[:20]}" in light for name, line in SUBCOMMANDS.items())


def test_the_package_imports_without_torch_and_loads_what_is_used():
    code = ("import sys, fastpipes; assert 'torch' not in sys.modules, 'import fastpipes'\n"
            "from fastpipes.recipe import load_recipe\n"
            "r = load_recipe('sam_bf16')  # reading SECTIONS imports the passes\n"
            "print(sorted(r.sections), fastpipes.accelerate.__module__)")
    p = _python("-c", code)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.split() == ["['attention',", "'compile',", "'precision']", "fastpipes.api"]


def test_a_registry_is_filled_by_its_module_on_first_read(monkeypatch):
    colors = Registry("color", filled_by="tests_fill_colors")
    calls = []

    def fill(name):
        calls.append(name)
        assert colors.names() == []  # a read during the fill does not import again
        colors.add("red", 1)

    monkeypatch.setattr("fastpipes.registry.importlib.import_module", fill)
    assert calls == []  # nothing is imported when the registry is made
    assert colors.get("red") == 1 and "red" in colors and len(colors) == 1
    assert calls == ["tests_fill_colors"]


def test_a_registry_whose_fill_fails_says_so_on_every_read(monkeypatch):
    broken = Registry("color", filled_by="no_such_module_for_fastpipes")
    for _ in range(2):  # not an empty registry the second time
        with pytest.raises(ModuleNotFoundError):
            broken.names()
