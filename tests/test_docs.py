"""The recipe reference is generated from the schema; a stale committed copy fails here. The
layout page names every top-level piece of the package, and the pages name no benchmark
script that is gone without saying so."""
import re
from pathlib import Path

from fastpipes.cli.recipe_docs import generate

DOC = Path(__file__).resolve().parents[1] / "docs" / "recipe-reference.md"


def test_recipe_reference_is_up_to_date():
    assert DOC.exists(), "run: python -m fastpipes.cli.recipe_docs > docs/recipe-reference.md"
    assert DOC.read_text() == generate(), \
        "docs/recipe-reference.md is stale; run: python -m fastpipes.cli.recipe_docs > docs/recipe-reference.md"


def test_reference_lists_every_section():
    from fastpipes.recipe.schema import SECTIONS

    text = generate()
    for name in SECTIONS:
        assert f"### `{name}`" in text


def test_fidelity_page_states_the_bars_the_code_uses():
    from fastpipes.cli.recipe_docs import BARS_BEGIN, BARS_END, bars_table

    page = (DOC.parent / "fidelity.md").read_text()
    assert BARS_BEGIN in page and BARS_END in page
    committed = page.split(BARS_BEGIN)[1].split(BARS_END)[0].strip("\n") + "\n"
    assert committed == bars_table(), \
        "docs/fidelity.md is stale; paste: python -m fastpipes.cli.recipe_docs --bars"


def test_layout_page_names_every_top_level_piece():
    package = DOC.parents[1] / "fastpipes"
    pieces = [f"fastpipes/{p.name}" + ("/" if p.is_dir() else "") for p in package.iterdir()
              if (p.suffix == ".py" and not p.name.startswith("_"))
              or (p.is_dir() and (p / "__init__.py").exists())]
    page = (DOC.parent / "layout.md").read_text()
    missing = [p for p in sorted(pieces) if f"`{p}`" not in page]
    assert not missing, f"docs/layout.md does not say where these live: {missing}"


def test_docs_name_no_missing_benchmark_script_unless_marked_removed():
    """Issue #27: the docs sent readers to benchmarks/sam_probe.py, sdxl_probe.py and
    sdxl_unfused_weights.py, long removed. A script a page names must exist, or the lines
    around the mention must say it was removed (and how to read it)."""
    root = DOC.parents[1]
    pages = [root / "README.md", *sorted((root / "docs").rglob("*.md")),
             *sorted((root / "benchmarks").glob("*.md"))]
    unmarked = []
    for page in pages:
        lines = page.read_text().splitlines()
        for i, line in enumerate(lines):
            for script in re.findall(r"benchmarks/[\w/.-]+?\.(?:py|sh)\b", line):
                near = " ".join(lines[max(0, i - 3):i + 8])  # a code block, then its note
                if not (root / script).exists() and "removed" not in near:
                    unmarked.append(f"{page.relative_to(root)}:{i + 1}: {script}")
    assert not unmarked, f"pages name benchmark scripts that do not exist: {unmarked}"
