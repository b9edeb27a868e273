"""`fastpipes info` and `fastpipes recipes ...` as a user runs them."""
import json
import textwrap

import pytest

from fastpipes.cli.main import main
from fastpipes.hardware import detect


def test_validate_prints_every_mistake_and_exits_1(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(textwrap.dedent("""
        name: three_mistakes
        famly: sam
        attention: {backend: flash, block_size: 1.5}
    """))
    assert main(["recipes", "validate", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "3 problems" in err
    assert "famly: unknown key (did you mean 'family'?)" in err or "famly: unknown section" in err
    assert "attention.backend: unknown value 'flash'" in err
    assert "attention.block_size: wrong type: 1.5" in err


def test_validate_good_file_is_one_line(tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text("name: good\nattention: {}\n")
    assert main(["recipes", "validate", str(good)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].endswith("ok (recipe 'good', family generic, passes: attention)")


def test_show_resolves_inheritance_and_overrides(recipe_dir, capsys):
    (recipe_dir / "parent.yaml").write_text("attention: {block_size: 64}\n")
    (recipe_dir / "kid.yaml").write_text("base: parent\nname: kid\n")
    assert main(["recipes", "show", "kid", "--set", "attention.backend=math"]) == 0
    out = capsys.readouterr().out
    assert "block_size: 64" in out and "backend: math" in out and "base:" not in out


def test_new_writes_a_commented_starter_that_validates(recipe_dir, tmp_path, capsys):
    (recipe_dir / "parent.yaml").write_text("name: parent\ndescription: p\nattention: {}\n")
    out = tmp_path / "mine.yaml"
    assert main(["recipes", "new", "mine", "--from", "parent", "-o", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# mine:") and "base: parent" in text and "# attention:" in text
    assert main(["recipes", "validate", str(out)]) == 0
    assert main(["recipes", "new", "mine", "--from", "parent", "-o", str(out)]) == 1  # exists


def test_new_from_a_path_writes_base_relative_to_the_new_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "b.yaml").write_text("name: b\nattention: {block_size: 64}\n")
    (tmp_path / "sub").mkdir()
    assert main(["recipes", "new", "c", "--from", "b.yaml", "-o", "sub/c.yaml"]) == 0
    assert "base: ../b.yaml" in (tmp_path / "sub" / "c.yaml").read_text()
    monkeypatch.chdir(tmp_path / "sub")  # a base relative to the file, not to the cwd
    assert main(["recipes", "validate", "c.yaml"]) == 0
    assert "passes: attention" in capsys.readouterr().out


def test_new_into_a_missing_directory_is_a_clear_error(tmp_path, capsys):
    out = tmp_path / "missing" / "x.yaml"
    assert main(["recipes", "new", "x", "--from", "sam_bf16", "-o", str(out)]) == 1
    assert f"directory {out.parent} does not exist" in capsys.readouterr().err
    assert not out.parent.exists()


def test_new_never_leaves_a_starter_that_does_not_validate(tmp_path, monkeypatch, capsys):
    from fastpipes.cli import recipes

    monkeypatch.setattr(recipes, "STARTER", recipes.STARTER + "attention: {{block_size: -1}}\n")
    monkeypatch.chdir(tmp_path)
    assert main(["recipes", "new", "x", "--from", "sam_bf16"]) == 1  # ./x.yaml
    err = capsys.readouterr().err
    assert "x.yaml: attention.block_size: must be >= 0" in err and "/.x-" not in err
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temporary one
    (tmp_path / "d").mkdir()
    assert main(["recipes", "new", "x", "--from", "sam_bf16", "-o", "d", "--force"]) == 1
    assert "cannot write d: it is a directory" in capsys.readouterr().err


def test_show_refuses_to_override_the_base(capsys):
    assert main(["recipes", "show", "sam_fp32_fast", "--set", "base=sam_bf16"]) == 1
    assert "base: the base of a recipe cannot be overridden" in capsys.readouterr().err


def test_list_shows_user_recipes(recipe_dir, capsys):
    (recipe_dir / "listed.yaml").write_text("name: listed\ndescription: shows up\nattention: {}\n")
    assert main(["recipes", "list"]) == 0
    out = capsys.readouterr().out
    assert "listed" in out and "shows up" in out
    assert "class" in out and "exact" in out  # attention only: FP32 numerics


def test_info_json_reports_native_bf16_truthfully(capsys):
    assert main(["info", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["bf16_native"] == detect().bf16_native
    assert set(data["isa"]) >= {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8", "avx_vnni"}
    names = {p["name"] for p in data["packages"]}
    assert {"segment-anything", "diffusers", "transformers", "intel-extension-for-pytorch",
            "torchvision"} <= names


def test_info_measures_the_ceiling_of_each_native_precision(capsys, monkeypatch):
    import fastpipes.bench.limits as limits

    monkeypatch.setattr(limits, "gemm_gflops", lambda device, n, repeats, dtype=None: 100.0)
    monkeypatch.setattr(limits, "bandwidth_gbps", lambda *a, **k: 25.0)
    assert main(["info", "--measure", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    ceilings = data["limits"]["ceilings"]
    assert ceilings["exact"] == 100.0 and ("bf16" in ceilings) == detect().bf16_native
    assert data["tier"] == detect().tier
    assert main(["info", "--measure"]) == 0
    out = capsys.readouterr().out
    assert "FP32 GEMM" in out and "100 GFLOP/s" in out and "25.0 GB/s" in out


def test_info_table_says_whether_bf16_is_native(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"tier" in out and detect().tier in out
    assert "bf16 matmul" in out
    assert ("not native" in out.split("bf16 matmul")[1].splitlines()[0]) != detect().bf16_native


def test_recipes_list_reads_at_80_columns(monkeypatch, capsys):
    """Issue #27: at 80 columns the list wrapped into ~300 lines with descriptions cut at
    their first ". " (mid-"incl."). Now: one line per recipe, the description cut with an
    ellipsis, and where to read the rest."""
    from fastpipes.recipe import available

    monkeypatch.setenv("COLUMNS", "80")
    assert main(["recipes", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= 80
    rows = [line for line in lines if line.count("│") == 6]
    assert len(rows) == len(available())  # one line each
    assert all(line.split("│")[1].strip() in available() for line in rows)
    assert any(line.rstrip("│ ").endswith("…") for line in rows)
    assert any("fastpipes recipes show NAME" in line for line in lines)
    here = {line.split("│")[4].strip() for line in rows}  # only the description is cut
    assert not any(h.endswith("…") for h in here), here
    if not detect().cuda_devices:
        assert "needs CUDA" in here
