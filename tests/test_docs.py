"""The recipe reference is generated from the schema; a stale committed copy fails here. The
layout page names every top-level piece of the package."""
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
