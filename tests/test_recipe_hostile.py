"""Recipes a hostile sweep tried (issue 22): nothing silently dropped or guessed, and nothing
of a file that is not a recipe is ever shown in an error."""
import os

import pytest
import torch

import fastpipes
from fastpipes.cli.main import main
from fastpipes.errors import ArgumentTypeError, FastpipesError, RecipeError
from fastpipes.recipe import load_recipe
from fastpipes.family import FAMILIES, BuildSpec
from fastpipes.recipe.schema import FAMILY_COMPONENTS

SECRET = "hunter2-s3cr3t-line"


def problems_of(spec, overrides=None) -> tuple[str, list]:
    with pytest.raises(RecipeError) as e:
        load_recipe(spec, overrides)
    return str(e.value), e.value.problems


# ---- duplicate keys ------------------------------------------------------------------------

@pytest.mark.parametrize("text, key, line, first", [
    ("family: sam\nattention: {}\nattention: {backend: sdpa}\n", "attention", 3, 2),
    ("compile:\n  mode: default\n  backend: inductor\n  mode: max-autotune\n", "compile.mode", 4, 2),
    ("name: a\nname: b\nattention: {}\n", "name", 2, 1),
])
def test_a_key_given_twice_is_an_error_naming_file_key_and_line(tmp_path, text, key, line, first):
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    msg, problems = problems_of(str(path))
    assert [(p.file, p.key) for p in problems] == [(str(path), key)], msg
    assert f"duplicate key at line {line} (first at line {first})" in msg


def test_a_yaml_merge_key_is_not_a_duplicate(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text("attention: &a {block_size: 16}\nprecision:\n  <<: {dtype: float16}\n"
                    "  dtype: bfloat16\n")
    assert load_recipe(str(path)).section("attention").block_size == 16


# ---- overrides that would drop each other --------------------------------------------------

@pytest.mark.parametrize("overrides, how", [
    (["compile=3", "compile.mode=default"], "sets a key inside what was set by"),
    (["compile.mode=default", "compile=3"], "replaces what holds the key set by"),
    (["compile.mode=default", "compile.mode=max-autotune"], "sets the same key as"),
])
def test_overrides_that_would_silently_drop_one_another_conflict(overrides, how):
    msg, problems = problems_of({"attention": {}}, overrides)
    assert any(p.file == "<overrides>" and how in p.message and overrides[0] in p.message
               for p in problems), msg


def test_overrides_of_different_keys_still_combine():
    r = load_recipe({"attention": {}}, ["compile.mode=default", "compile.dynamic=false"])
    assert r.section("compile").mode.value == "default" and r.section("compile").dynamic is False


# ---- components checked against the family -------------------------------------------------

def test_a_component_the_family_does_not_have_fails_validation(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("family: sam\ncompile: {components: [nope]}\n")
    msg, problems = problems_of(str(path))
    assert [p.key for p in problems] == ["compile.components[0]"], msg
    assert "unknown sam component 'nope'" in msg
    assert "image_encoder, prompt_encoder, mask_decoder" in msg
    msg, problems = problems_of("sam_bf16", ["precision.components=[image_encodr]"])
    assert problems[0].file == "<overrides>" and "did you mean 'image_encoder'?" in msg


def test_a_workload_the_family_does_not_have_fails_validation(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text("family: sam\nworkload: clik\nmemory_format: {}\n")
    msg, problems = problems_of(str(path))
    assert [p.key for p in problems] == ["workload"], msg
    assert "unknown sam workload 'clik' (did you mean 'click'?)" in msg and "encoder, click" in msg
    msg, problems = problems_of({"workload": "click", "memory_format": {}})
    assert [p.key for p in problems] == ["workload"] and "generic recipes have no" in msg
    assert load_recipe("sam_bf16_click_aot").workload == "click"  # inherited from its base
    assert load_recipe("sam_bf16").workload is None


def test_generic_recipes_name_any_component():
    assert load_recipe({"compile": {"components": ["whatever"]}}).section("compile")


@pytest.mark.parametrize("family", FAMILIES.names())
def test_the_family_component_lists_match_the_adapters(family):
    from fastpipes.pipelines.base import find_adapter

    pytest.importorskip({"sdxl": "diffusers", "llama": "transformers"}.get(family, "torch"))
    described = FAMILIES.get(family)
    adapter = find_adapter(described.build(BuildSpec(size="tiny")))
    assert adapter.family == family and isinstance(adapter, described.adapter)
    known = FAMILY_COMPONENTS.get(family)
    assert known is None or set(adapter.components()) <= set(known)


# ---- accelerate(strict=...) ----------------------------------------------------------------

@pytest.mark.parametrize("strict", ["no", "false", 0, None, 1.0])
def test_strict_must_be_a_bool(strict):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ArgumentTypeError, match=r"strict=\.\.\.\) must be True or False, got"):
        fastpipes.accelerate(model, {"memory_format": {}}, strict=strict)
    assert isinstance(ArgumentTypeError("x"), TypeError)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert next(model.parameters()).is_contiguous()


def test_verbose_must_be_a_bool_too():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    with pytest.raises(ArgumentTypeError, match=r"verbose=\.\.\.\) must be True or False"):
        fastpipes.accelerate(model, {"memory_format": {}}, verbose="no")
    assert next(model.parameters()).is_contiguous()


# ---- recipes list --family -----------------------------------------------------------------

def test_recipes_list_of_an_unknown_family_is_an_error_listing_families(capsys):
    with pytest.raises(SystemExit) as e:
        main(["recipes", "list", "--family", "cat"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'cat'" in err and "'sam', 'sdxl', 'llama', 'generic'" in err


# ---- files that are not recipes are never shown ---------------------------------------------

@pytest.fixture
def secret_file(tmp_path):
    path = tmp_path / "private" / "shadow"
    path.parent.mkdir()
    path.write_text(f"root:{SECRET}:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n")
    return path


def _refused(capsys, argv) -> str:
    try:
        code = main(argv)
    except FastpipesError as e:  # `recipes show` leaves the error to the top level
        code, err = 1, str(e)
    else:
        err = capsys.readouterr().err
    assert code != 0
    return err


def test_a_symlink_to_a_secret_is_not_quoted(tmp_path, secret_file, capsys):
    link = tmp_path / "r.yaml"
    link.symlink_to(secret_file)
    err = _refused(capsys, ["recipes", "validate", str(link)])
    assert SECRET not in err and "root:" not in err
    assert f"{link}: not a recipe: " in err
    assert "a YAML mapping whose keys are recipe keys" in err


def test_show_and_base_of_a_path_outside_name_the_file_only(tmp_path, secret_file, capsys,
                                                            monkeypatch):
    monkeypatch.chdir(tmp_path)
    rel = os.path.relpath(secret_file, tmp_path)
    err = _refused(capsys, ["recipes", "show", rel])
    assert SECRET not in err and "not a recipe" in err and rel in err
    (tmp_path / "child.yaml").write_text(f"base: {secret_file}\nattention: {{}}\n")
    msg, problems = problems_of(str(tmp_path / "child.yaml"))
    assert SECRET not in msg and problems[0].file == str(secret_file)


@pytest.mark.parametrize("text", [
    f"a: *{SECRET}\n",  # the parser quotes an alias name
    f"{SECRET}: x: y\n",  # a mapping error on a line of the file
    f"a: \"\\q{SECRET}\"\nb: [1\n",
    f"a: &{SECRET} 1\nb: &{SECRET} 2\n",
    f"password: {SECRET}\nuser: {SECRET}\n",  # a mapping, but with no recipe key at all
    f"password: [{SECRET}\n",
])
def test_nothing_of_a_file_that_did_not_parse_as_a_recipe_is_quoted(tmp_path, text):
    path = tmp_path / "x.yaml"
    path.write_text(text)
    msg, problems = problems_of(str(path))
    assert SECRET not in msg and "hunter2" not in msg, msg
    assert all(p.file == str(path) for p in problems)


def test_an_alias_name_with_a_quote_is_not_quoted_either(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text(f"a: *it's-{SECRET}\n")
    msg, _ = problems_of(str(path))
    assert SECRET not in msg and "malformed YAML" in msg
