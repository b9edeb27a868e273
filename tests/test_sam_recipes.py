"""The built-in SAM recipes load and validate."""
import pytest

from fastpipes.recipe.load import load_recipe


@pytest.mark.parametrize("name", ["sam_fp32_fast", "sam_bf16"])
def test_sam_recipes_validate(name):
    rec = load_recipe(name)
    assert rec.family == "sam"
    assert rec.sections["attention"].block_size == 1024
    assert rec.requires.native_bf16 is (name == "sam_bf16")
