"""The built-in SAM recipes load and validate (once the compile and precision passes exist)."""
import pytest

from fastpipes.recipe.load import load_recipe
from fastpipes.recipe.schema import SECTIONS


@pytest.mark.parametrize("name", ["sam_fp32_fast", "sam_bf16"])
def test_sam_recipes_validate(name):
    import fastpipes.passes  # noqa: F401

    if "compile" not in SECTIONS or "precision" not in SECTIONS:
        pytest.skip("compile/precision passes not merged into this branch yet")
    rec = load_recipe(name)
    assert rec.family.value == "sam"
    assert rec.sections["attention"].block_size == 1024
    assert rec.requires.native_bf16 is (name == "sam_bf16")
