"""The scripts in benchmarks/ (RESULTS.md names them with the commands that made its rows)
still import what they use from fastpipes: a name moved in the product must not leave a
recorded command failing at its first line (sam_encoder_interleaved.py imported
relative_error from its old module for a day). Checked from the source, without running the
scripts, several of which measure for minutes at import."""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(BENCHMARKS.glob("*.py"))


def fastpipes_imports(path: Path) -> list[tuple[str, str | None, int]]:
    """(module, name or None, line) of every fastpipes import in `path`, at any depth."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "fastpipes":
            out += [(node.module, a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.Import):
            out += [(a.name, None, node.lineno) for a in node.names
                    if a.name.split(".")[0] == "fastpipes"]
    return out


def test_there_are_scripts_to_check():
    assert len(SCRIPTS) >= 10 and any(fastpipes_imports(p) for p in SCRIPTS)


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_every_fastpipes_name_a_script_imports_exists(path):
    missing = []
    for module, name, line in fastpipes_imports(path):
        try:
            mod = importlib.import_module(module)
        except ImportError as e:
            missing.append(f"line {line}: {module}: {e}")
            continue
        if name is not None and name != "*" and not hasattr(mod, name):
            try:  # a submodule imported by name: from fastpipes.bench import runner
                importlib.import_module(f"{module}.{name}")
            except ImportError:
                missing.append(f"line {line}: {module} has no {name}")
    assert not missing, f"{path.name}: " + "; ".join(missing)
