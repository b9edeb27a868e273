"""The house stays readable in pieces (issue 23): no function over 60 lines and no module much
over 400 in the package and the benchmark scripts, read from the source (nothing imported).

A function is counted from its first decorator to its last line, docstring and nested
functions included; a method is named ``Class.method``. When one has to grow past the bar,
split it by meaning (a helper per step), or list it below with the reason it stays whole:
an entry that no longer needs its place fails the test too, so the list only shrinks.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TREES = ("fastpipes", "benchmarks")
FUNCTION_LINES = 60
MODULE_LINES = 420  # "no module much over 400"

# "path:qualified name" -> why it stays over FUNCTION_LINES (none at present)
LONG_FUNCTIONS: dict[str, str] = {}
# path -> why it stays over MODULE_LINES (none at present)
LONG_MODULES: dict[str, str] = {}


def _sources() -> dict[str, str]:
    return {f.relative_to(ROOT).as_posix(): f.read_text()
            for tree in TREES for f in sorted((ROOT / tree).rglob("*.py"))}


def _functions(tree: ast.AST, prefix: str = ""):
    """(qualified name, lines) of every function and method, nested ones too."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            name = f"{prefix}{node.name}"
            if not isinstance(node, ast.ClassDef):
                first = min([d.lineno for d in node.decorator_list] + [node.lineno])
                yield name, node.end_lineno - first + 1
            yield from _functions(node, name + ".")
        else:
            yield from _functions(node, prefix)


def _long_functions() -> dict[str, int]:
    return {f"{path}:{name}": lines for path, text in _sources().items()
            for name, lines in _functions(ast.parse(text)) if lines > FUNCTION_LINES}


def _long_modules() -> dict[str, int]:
    return {path: n for path, text in _sources().items()
            if (n := len(text.splitlines())) > MODULE_LINES}


def test_no_function_over_60_lines():
    long = {k: n for k, n in _long_functions().items() if k not in LONG_FUNCTIONS}
    assert not long, (f"functions over {FUNCTION_LINES} lines (split by meaning, or list with "
                      f"a reason in LONG_FUNCTIONS): {long}")


def test_no_module_much_over_400_lines():
    long = {k: n for k, n in _long_modules().items() if k not in LONG_MODULES}
    assert not long, (f"modules over {MODULE_LINES} lines (split by meaning, or list with a "
                      f"reason in LONG_MODULES): {long}")


def test_the_exceptions_still_need_their_place():
    stale = sorted(set(LONG_FUNCTIONS) - set(_long_functions())) + \
        sorted(set(LONG_MODULES) - set(_long_modules()))
    assert not stale, f"no longer over the bar (or gone): remove from the allow-list: {stale}"


def test_the_counter_sees_methods_nested_functions_and_decorators():
    text = "class A:\n    @staticmethod\n    def f():\n        def g():\n            pass\n"
    assert dict(_functions(ast.parse(text))) == {"A.f": 4, "A.f.g": 2}
