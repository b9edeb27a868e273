"""Every class of bad recipe gives one error listing every problem with file, key, value, allowed."""
import textwrap

import pytest

from fastpipes.errors import RecipeError
from fastpipes.recipe import load_recipe


def bad(tmp_path, text):
    p = tmp_path / "bad.yaml"
    p.write_text(textwrap.dedent(text))
    with pytest.raises(RecipeError) as e:
        load_recipe(str(p))
    return str(e.value), e.value.problems, str(p)


def test_all_problems_reported_at_once_with_file_key_value_allowed(tmp_path):
    msg, problems, path = bad(tmp_path, """
        name: broken
        family: vision
        attentoin: {}
        attention: {backend: fast, block_size: "big"}
        memory_format: {enabled: yes please}
    """)
    assert len(problems) == 5, msg
    assert all(p.file == path for p in problems)
    assert f"{path}: family: unknown value 'vision'" in msg and "sam, sdxl, llama, generic" in msg
    assert "attentoin: unknown section (did you mean 'attention'?)" in msg
    assert "attention.backend: unknown value 'fast'" in msg
    assert "attention.block_size: wrong type: 'big' (allowed: integer)" in msg
    assert "memory_format.enabled: wrong type: 'yes please' (allowed: true or false)" in msg


def test_problems_name_the_file_they_are_in(tmp_path):
    (tmp_path / "parent.yaml").write_text("attention: {backend: nope}\n")
    (tmp_path / "child.yaml").write_text("base: parent.yaml\nmemory_format: {convert_inputs: 3}\n")
    with pytest.raises(RecipeError) as e:
        load_recipe(str(tmp_path / "child.yaml"))
    files = sorted(p.file.split("/")[-1] for p in e.value.problems)
    assert files == ["child.yaml", "parent.yaml"]


def test_malformed_yaml_reports_line(tmp_path):
    msg, problems, _ = bad(tmp_path, "name: x\nattention: {backend: sdpa\nmemory_format: {}\n")
    assert "malformed YAML at line" in msg


def test_top_level_must_be_a_mapping(tmp_path):
    msg, _, _ = bad(tmp_path, "- attention\n- compile\n")
    assert "not a recipe: the file holds a list, not a mapping of keys" in msg


def test_section_must_be_a_mapping_and_lists_are_checked(tmp_path):
    msg, problems, _ = bad(tmp_path, "attention: sdpa\nmemory_format: {components: [unet, 3]}\n")
    assert "attention: expected a mapping, got 'sdpa'" in msg
    assert "memory_format.components[1]: wrong type: 3 (allowed: string)" in msg


def test_cross_field_check_of_a_section(tmp_path):
    msg, _, _ = bad(tmp_path, "attention: {block_size: -1}\n")
    assert "attention.block_size: must be >= 0" in msg


def test_requires_is_typed(tmp_path):
    msg, _, _ = bad(tmp_path, "requires: {native_bf16: maybe, gpu: true}\n")
    assert "requires.native_bf16: wrong type" in msg
    assert "requires.gpu: unknown key" in msg


@pytest.mark.parametrize("text", ["", "# only a comment\n", "name: x\ndescription: d\n",
                                  "name: x\ncompile: null\n"])
def test_a_recipe_that_sets_nothing_is_an_error(tmp_path, text):
    msg, problems, path = bad(tmp_path, text)
    assert len(problems) == 1 and problems[0].file == path
    assert "empty recipe: it sets no pass section and no base" in msg


def test_a_recipe_of_only_a_base_is_fine(tmp_path):
    (tmp_path / "parent.yaml").write_text("attention: {}\n")
    (tmp_path / "kid.yaml").write_text("base: parent.yaml\n")
    assert list(load_recipe(str(tmp_path / "kid.yaml")).sections) == ["attention"]
    (tmp_path / "none.yaml").write_text("base: parent.yaml\nattention: null\n")
    resolved = load_recipe(str(tmp_path / "none.yaml"))
    assert resolved.sections == {}
    assert load_recipe(resolved.raw).sections == {}  # its resolved form, as bench workers get it


@pytest.mark.parametrize("options, message", [
    ({"freezing": "maybe"}, "compile.options.freezing: wrong type: 'maybe' "
                            "(allowed: true or false)"),
    ({"cpp.threads": "two"}, "compile.options.cpp.threads: wrong type: 'two' (allowed: integer)"),
    ({"cpp.threads": True}, "compile.options.cpp.threads: wrong type: True (allowed: integer)"),
    ({"triton.multi_kernel": 7}, "compile.options.triton.multi_kernel: wrong type: 7 "
                                 "(allowed: one of: 0, 1, 2, 3)"),
    ({"post_grad_custom_pre_pass": "os.system"}, "not settable from a recipe"),
    ({"freezeing": True}, "compile.options.freezeing: unknown Inductor option "
                          "(did you mean 'freezing'?)"),
])
def test_inductor_options_are_checked_by_name_and_type_at_load_time(tmp_path, options, message):
    with pytest.raises(RecipeError) as e:
        load_recipe({"compile": {"options": options}})
    assert message in str(e.value)


def test_good_inductor_options_load(tmp_path):
    # names in torch._inductor.config of torch 2.8 (the floor) and 2.13 alike
    options = {"freezing": True, "cpp.threads": 2, "max-autotune": False,
               "max_autotune_subproc_result_timeout_seconds": 60.0,
               "triton.multi_kernel": 1, "cpp.descriptive_names": "torch"}
    assert load_recipe({"compile": {"options": options}}).section("compile").options == options


def test_compile_options_override_is_blamed_on_the_override(tmp_path):
    (tmp_path / "c.yaml").write_text("compile: {options: {freezing: true}}\n")
    with pytest.raises(RecipeError) as e:
        load_recipe(str(tmp_path / "c.yaml"), ["compile.options.freezing=maybe"])
    assert [(p.file, p.key) for p in e.value.problems] == [("<overrides>",
                                                              "compile.options.freezing")]


def test_value_checks_are_reported_beside_type_problems(tmp_path):
    """Issue #27: a bad attention.block_size appeared only after the other problems were
    fixed. The value checks of well-typed sections now run in the same pass, merged across
    the chain, and blamed on the file that set the value."""
    (tmp_path / "parent.yaml").write_text("attention: {block_size: -4}\n"
                                          "quantize: {mode: dynamic}\n")
    msg, problems, path = bad(tmp_path, f"""
        base: {tmp_path / "parent.yaml"}
        compile: {{mode: fastest}}
        precision: {{dtype: float8}}
        quantize: {{dtype: int4, group_size: 128}}
    """)
    keys = sorted(p.key for p in problems)
    assert keys == ["attention.block_size", "compile.mode", "precision.dtype", "quantize.mode"], msg
    by_key = {p.key: p for p in problems}
    assert by_key["attention.block_size"].file == str(tmp_path / "parent.yaml")
    assert "must be >= 0, got -4" in msg
    assert "mode dynamic needs dtype int4" not in msg and "needs dtype int8, got int4" in msg
    assert by_key["quantize.mode"].file == str(tmp_path / "parent.yaml")  # as when valid


def test_value_checks_of_a_section_with_a_type_problem_are_reported_too(tmp_path):
    """Issue #27, audited: `attention: {backend: nope, block_size: -3}` reported the backend
    only, and a misspelt component waited for every type problem to be fixed. The section's
    other fields are checked with the bad one left out (its default standing in); a check
    on a field that already has a problem is not repeated."""
    msg, problems, _ = bad(tmp_path, """
        family: sam
        attention: {backend: nope, block_size: -3, components: [image_encodr]}
        compile: {mode: fastest}
        openvino: {components: [1], group_size: 100}
    """)
    keys = sorted(p.key for p in problems)
    assert keys == ["attention.backend", "attention.block_size", "attention.components[0]",
                    "compile.mode", "openvino.components[0]", "openvino.group_size"], msg
    assert "must be >= 0, got -3" in msg and "did you mean 'image_encoder'" in msg
    assert "name the components to convert" not in msg  # components has its own problem


def test_a_section_of_the_wrong_type_gets_no_value_checks(tmp_path):
    msg, problems, _ = bad(tmp_path, """
        attention: 5
        quantize: {mode: dynamic, dtype: int4, group_size: 7, min_features: nope}
    """)
    assert sorted(p.key for p in problems) == ["attention", "quantize.group_size",
                                                "quantize.min_features", "quantize.mode"], msg


def test_a_dotted_inductor_option_can_be_overridden_from_the_command_line():
    """`--set compile.options.cpp.weight_prepack=true` arrives nested ({cpp: {...}}); it is the
    same option as the recipe's dotted `cpp.weight_prepack`, and the override wins."""
    assert load_recipe("sam_bf16").section("compile").options == {
        "freezing": True, "cpp.weight_prepack": False}
    over = load_recipe("sam_bf16", ["compile.options.cpp.weight_prepack=true"])
    assert over.section("compile").options == {"freezing": True, "cpp.weight_prepack": True}
    with pytest.raises(RecipeError, match=r"compile.options.cpp.weight_prepak: unknown Inductor "
                                          r"option \(did you mean 'cpp.weight_prepack'\?\)"):
        load_recipe("sam_bf16", ["compile.options.cpp.weight_prepak=true"])
