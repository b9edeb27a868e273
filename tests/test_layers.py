"""The house: imports flow one way, and there is no circle.

Layers, lowest first (a module may import its own layer or any lower one, never a higher):
errors / registry / hardware / cache / fingerprint / report / snapshot / files / tensorfile /
timing / progress -> recipe / fidelity (the bar and verdict types, judged per precision class) ->
kernels -> passes -> families (family: the description type and registry; pipelines: the
adapter contract; sam / sdxl / llama / generic: one folder each) -> api / apply / auto -> bench
/ run -> cli. A family's folder spans layers: its description, pipeline and adapter sit in the
families layer, its benchmark workload in bench's and its run job in run's (``FAMILY_PARTS``,
read from the registered descriptions, so a new family needs no edit here unless its folder has
more engine-layer modules); a module's layer is that of its longest listed prefix. Imports are
read from the source, inside functions too (an import hidden in a function to dodge a circle is
an upward arrow all the same); only ``if TYPE_CHECKING:`` blocks are exempt.
"""
from __future__ import annotations

import ast
from pathlib import Path

from fastpipes.families import FAMILIES as REGISTERED

PACKAGE = Path(__file__).resolve().parents[1] / "fastpipes"
FAMILIES = [f.build.__module__ for _, f in REGISTERED.items()]  # each folder's package


def _hook_modules(hook: str) -> list[str]:
    return [ref.partition(":")[0] for _, f in REGISTERED.items() if (ref := getattr(f, hook))]


# the parts of a family's folder that belong to an engine's layer: its bench workload and run
# job, and the modules only they use
FAMILY_PARTS = {
    "bench": _hook_modules("bench") + ["fastpipes.sam.click", "fastpipes.sam.click_casts"],
    "run": _hook_modules("run") + ["fastpipes.sam.amg", "fastpipes.sam.nms",
                                   "fastpipes.sam.image_io"],
}
LAYERS = [
    ["fastpipes._version", "fastpipes.errors", "fastpipes.bounds", "fastpipes.registry",
     "fastpipes.hardware", "fastpipes.cache", "fastpipes.cache_clear", "fastpipes.fingerprint",
     "fastpipes.report", "fastpipes.snapshot", "fastpipes.openvino_probe", "fastpipes.files",
     "fastpipes.tensorfile", "fastpipes.timing", "fastpipes.progress"],
    ["fastpipes.recipe", "fastpipes.fidelity"],
    ["fastpipes.kernels"],
    ["fastpipes.passes"],
    ["fastpipes.family", "fastpipes.pipelines", "fastpipes.families", *FAMILIES],
    ["fastpipes.api", "fastpipes.apply", "fastpipes.auto", "fastpipes.auto_order",
     "fastpipes.auto_search"],
    ["fastpipes.bench", *FAMILY_PARTS["bench"]],
    ["fastpipes.run", *FAMILY_PARTS["run"]],
    ["fastpipes.cli"],
]
TOP = {"fastpipes", "fastpipes.__main__"}  # the package's face: may import anything


def modules() -> dict[str, Path]:
    out = {}
    for f in PACKAGE.rglob("*.py"):
        parts = f.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = f
    return out


def layer(name: str) -> int:
    found = [(len(p), i) for i, prefixes in enumerate(LAYERS) for p in prefixes
             if name == p or name.startswith(p + ".")]
    if not found:
        raise AssertionError(f"module {name} has no layer: add it to LAYERS in {__file__}")
    return max(found)[1]


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    # a package's __init__ importing its own submodules (registries filled on import) and a
    # submodule importing its parent package are not arrows between layers
    return {t for t in found if t in known and t != name and not name.startswith(t + ".")
            and not t.startswith(name + ".")}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {n: imports(n, p, known) for n, p in known.items()}


def test_every_module_has_a_layer():
    for name in modules():
        if name not in TOP:
            layer(name)


def test_no_upward_import():
    upward = [f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})"
              for a, targets in graph().items() if a not in TOP
              for b in sorted(targets) if b not in TOP and layer(b) > layer(a)]
    assert not upward, "imports must flow down the layers:\n" + "\n".join(upward)


def test_no_import_circle():
    g, state, stack, circles = graph(), {}, [], []

    def visit(u: str) -> None:
        state[u] = 1
        stack.append(u)
        for v in sorted(g[u]):
            if state.get(v) == 1:
                circles.append(" -> ".join(stack[stack.index(v):] + [v]))
            elif not state.get(v):
                visit(v)
        stack.pop()
        state[u] = 2

    for m in sorted(g):
        if not state.get(m):
            visit(m)
    assert not circles, "import circles:\n" + "\n".join(circles)

