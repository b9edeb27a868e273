"""Ablations: a recipe with each pass dropped, and each pass alone (bench --ablate, auto)."""
import json

import pytest

from fastpipes.errors import RecipeError
from fastpipes.recipe import load_recipe
from fastpipes.recipe.ablate import ablations, parse, rebuild


def test_each_pass_dropped_then_each_alone():
    rec = load_recipe("sam_fp32_fast")
    names = [v["name"] for v in ablations(rec)]
    assert names == ["sam_fp32_fast without attention", "sam_fp32_fast without compile",
                     "sam_fp32_fast attention only", "sam_fp32_fast compile only"]
    dropped = load_recipe(ablations(rec)[1])
    assert list(dropped.sections) == ["attention"] and dropped.family == "sam"
    only = load_recipe(ablations(rec)[3])
    assert list(only.sections) == ["compile"]
    assert only.section("compile").options == {"freezing": False}  # sam_fp32_fast compiles unfrozen
    assert ablations(load_recipe({"memory_format": {}})) == []  # one pass: nothing to ablate


def test_a_variant_is_rebuilt_from_its_name():
    assert parse("sam_bf16 without compile") == ("without", "sam_bf16", "compile")
    assert parse("sam_bf16 precision only") == ("only", "sam_bf16", "precision")
    assert parse("sam_bf16") is None
    again = load_recipe(rebuild("sam_bf16 without compile"))
    assert "compile" not in again.sections and again.precision_class.value == "bf16"
    assert rebuild("sam_bf16 without quantize") is None  # not one of its passes
    with pytest.raises(RecipeError):
        rebuild("no_such_recipe without compile")


def test_bench_ablate_runs_every_variant_beside_fp32(tmp_path, capsys):
    from fastpipes.cli.main import main

    recipe = tmp_path / "two.yaml"
    recipe.write_text("name: two\nmemory_format: {convert_inputs: false}\nprecision: {}\n")
    out = tmp_path / "r.json"
    assert main(["bench", "toy", "--size", "tiny", "--ablate", str(recipe), "--iters", "1",
                 "--warmup", "0", "--no-limits", "--no-warm-start", "--quiet",
                 "--json", str(out)]) == 0
    rows = {c["name"]: c for c in json.loads(out.read_text())["configs"]}
    assert list(rows) == ["fp32_eager", "two", "two without memory_format",
                          "two without precision", "two memory_format only", "two precision only"]
    assert all(c["status"] == "ok" and c["speedup"] for c in rows.values())
    assert rows["two memory_format only"]["precision_class"] == "exact"
    assert rows["two without memory_format"]["precision_class"] == "bf16"
