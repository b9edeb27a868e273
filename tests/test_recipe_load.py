"""Loading recipes: names, paths, FASTPIPES_RECIPE_PATH, inheritance, overrides."""
import textwrap

import pytest

from fastpipes.errors import RecipeError, RecipeNotFoundError
from fastpipes.recipe import GENERIC, load_recipe


def write(d, name, text):
    p = d / name
    p.write_text(textwrap.dedent(text))
    return p


def test_load_by_path_and_by_name_from_env_path(recipe_dir):
    write(recipe_dir, "mine.yaml", """
        name: mine
        family: generic
        description: my recipe
        memory_format: {convert_inputs: false}
    """)
    by_name = load_recipe("mine")
    by_path = load_recipe(str(recipe_dir / "mine.yaml"))
    assert by_name == by_path
    assert by_name.section("memory_format").convert_inputs is False
    assert by_name.family == GENERIC


def test_inheritance_three_levels_child_wins(recipe_dir):
    write(recipe_dir, "a.yaml", "attention: {block_size: 64}\nmemory_format: {}\n")
    write(recipe_dir, "b.yaml", "base: a\nattention: {backend: math}\n")
    write(recipe_dir, "c.yaml", "base: b.yaml\nname: c\nmemory_format: null\n")
    r = load_recipe("c")
    att = r.section("attention")
    assert (att.backend.value, att.block_size) == ("math", 64)
    assert r.section("memory_format") is None  # null removes an inherited section
    assert [p.split("/")[-1] for p in r.chain] == ["c.yaml", "b.yaml", "a.yaml"]


def test_inheritance_cycle_names_the_chain(recipe_dir):
    write(recipe_dir, "x.yaml", "base: y\n")
    write(recipe_dir, "y.yaml", "base: x\n")
    with pytest.raises(RecipeError, match="cycle") as e:
        load_recipe("x")
    assert "x.yaml" in str(e.value) and "y.yaml" in str(e.value)


def test_missing_base_names_the_chain(recipe_dir):
    write(recipe_dir, "orphan.yaml", "base: no_such_recipe\n")
    with pytest.raises(RecipeNotFoundError, match="no_such_recipe") as e:
        load_recipe("orphan")
    assert "orphan.yaml" in str(e.value)


def test_unknown_recipe_lists_available_with_did_you_mean(recipe_dir):
    write(recipe_dir, "speedy.yaml", "memory_format: {}\n")
    with pytest.raises(RecipeNotFoundError, match="did you mean 'speedy'"):
        load_recipe("speedyy")


def test_dotlist_overrides_apply_and_are_validated(recipe_dir):
    write(recipe_dir, "o.yaml", "attention: {}\n")
    r = load_recipe("o", ["attention.block_size=32", "attention.backend=math"])
    assert r.section("attention").block_size == 32
    with pytest.raises(RecipeError) as e:
        load_recipe("o", ["attention.blok_size=32", "attention.backend=fast", "oops"])
    msg = str(e.value)
    assert "3 problems" in msg
    assert "<overrides>: attention.blok_size: unknown key (did you mean 'block_size'?)" in msg
    assert "unknown value 'fast'" in msg and "sdpa, math, ipex" in msg
    assert "key.path=value" in msg


def test_mapping_overrides_and_disabled_section(recipe_dir):
    write(recipe_dir, "m.yaml", "memory_format: {}\n")
    r = load_recipe("m", {"memory_format": {"enabled": False}})
    assert r.sections["memory_format"].enabled is False
    assert r.section("memory_format") is None


def test_interpolation_is_refused_not_resolved(recipe_dir):
    write(recipe_dir, "i.yaml", "attention: {block_size: 16}\nmemory_format: {enabled: '${attention.block_size}'}\n")
    with pytest.raises(RecipeError, match="memory_format.enabled: interpolation is not allowed"):
        load_recipe("i")


def test_one_override_string_is_one_override(recipe_dir):
    write(recipe_dir, "o.yaml", "attention: {}\n")
    r = load_recipe("o", "attention.block_size=32")
    assert r.section("attention").block_size == 32


@pytest.mark.parametrize("item, message", [
    ("compile.components=[x", "compile.components: cannot parse value '[x': malformed YAML"),
    ("compile.options.x=" + "[" * 100 + "]" * 100, "compile.options.x: nested more than 32"),
    ("compile.options.x={a: [1, 2]", "compile.options.x: cannot parse value"),
])
def test_unparsable_override_names_the_override(recipe_dir, item, message):
    write(recipe_dir, "o.yaml", "attention: {}\n")
    with pytest.raises(RecipeError) as e:
        load_recipe("o", ["attention.block_size=32", item])
    assert [p.file for p in e.value.problems] == ["<overrides>"]
    assert message in str(e.value)


def test_base_cannot_be_overridden(recipe_dir):
    write(recipe_dir, "a.yaml", "attention: {block_size: 64}\n")
    write(recipe_dir, "b.yaml", "memory_format: {}\n")
    for overrides in (["base=b"], {"base": "b"}):
        with pytest.raises(RecipeError, match="<overrides>: base: the base of a recipe cannot "
                                              "be overridden") as e:
            load_recipe("a", overrides)
        assert "fastpipes recipes new NAME --from BASE" in str(e.value)


def test_cross_field_problems_name_the_file_or_override_that_set_the_value(recipe_dir):
    write(recipe_dir, "parent.yaml", "attention: {block_size: -1}\n")
    write(recipe_dir, "kid.yaml", "base: parent\nmemory_format: {}\n")
    with pytest.raises(RecipeError) as e:
        load_recipe("kid")
    assert [p.file.split("/")[-1] for p in e.value.problems] == ["parent.yaml"]
    with pytest.raises(RecipeError) as e:
        load_recipe("kid", ["attention.block_size=-5"])
    assert [(p.file, p.key) for p in e.value.problems] == [("<overrides>", "attention.block_size")]
    assert "must be >= 0, got -5" in str(e.value)


def test_yaml_cannot_construct_objects(recipe_dir):
    write(recipe_dir, "evil.yaml", "attention: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(RecipeError, match="malformed YAML"):
        load_recipe("evil")


def test_results_name_builtin_recipes_without_the_machines_path(recipe_dir):
    from fastpipes.recipe.load import shown_source
    builtin = load_recipe("sam_bf16")
    assert shown_source(builtin.source) == "recipes/sam_bf16.yaml"
    mine = write(recipe_dir, "mine.yaml", "name: mine\nfamily: generic\nmemory_format: {}\n")
    assert shown_source(load_recipe(str(mine)).source) == str(mine)
    assert shown_source(None) is None
