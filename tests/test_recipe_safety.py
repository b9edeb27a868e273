"""Recipes are data: no interpolation or resolver runs from one, and no file (or override) can
make loading slow, deep or unreadable enough to end in anything but a RecipeError."""
import json
import subprocess
import sys
import textwrap

import pytest
from omegaconf import OmegaConf

from fastpipes.errors import RecipeError
from fastpipes.recipe import load_recipe


def billion_laughs(levels: int, key: str = "description") -> str:
    """`levels` anchors of 9 aliases each: ~400 bytes that expand to 9**levels strings."""
    lines = ["a0: &a0 [x,x,x,x,x,x,x,x,x]"]
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + f"\n{key}: *a{levels - 1}\n"


def test_env_resolver_never_reads_the_environment(recipe_dir, monkeypatch):
    monkeypatch.setenv("FASTPIPES_TEST_SECRET", "hunter2")
    (recipe_dir / "leak.yaml").write_text(
        'name: "x-${oc.env:FASTPIPES_TEST_SECRET,none}"\nattention: {}\n')
    with pytest.raises(RecipeError) as e:
        load_recipe("leak")
    assert "name: interpolation is not allowed" in str(e.value)
    assert "hunter2" not in str(e.value)
    for overrides in (["description=${oc.env:FASTPIPES_TEST_SECRET}"],
                      {"description": "${oc.env:FASTPIPES_TEST_SECRET}"}):
        with pytest.raises(RecipeError, match="<overrides>: description: interpolation") as e:
            load_recipe({"attention": {}}, overrides)
        assert "hunter2" not in str(e.value)


def test_a_resolver_the_host_registered_never_runs(recipe_dir):
    calls = []
    OmegaConf.register_resolver("fastpipes_test_eval", lambda x: calls.append(x) or "ran",
                                replace=True)
    try:
        (recipe_dir / "ev.yaml").write_text('description: "${fastpipes_test_eval:1}"\n'
                                            "attention: {}\n")
        with pytest.raises(RecipeError, match="description: interpolation is not allowed"):
            load_recipe("ev")
        (recipe_dir / "ok.yaml").write_text("attention: {}\n")
        for overrides in (["description=${fastpipes_test_eval:2}"],
                          {"attention": {"components": ["${fastpipes_test_eval:3}"]}}):
            with pytest.raises(RecipeError, match="interpolation is not allowed"):
                load_recipe("ok", overrides)
    finally:
        OmegaConf.clear_resolver("fastpipes_test_eval")
    assert calls == []


def test_plain_references_are_refused_too(recipe_dir):
    (recipe_dir / "ref.yaml").write_text("attention: {block_size: 16}\n"
                                         "compile: {components: ['${attention.block_size}']}\n")
    with pytest.raises(RecipeError, match=r"compile.components\[0\]: interpolation is not "
                                          r"allowed: '\$\{attention.block_size\}'"):
        load_recipe("ref")


_BOMB_CHILD = textwrap.dedent("""
    import json, resource, sys, time
    from fastpipes.errors import RecipeError
    from fastpipes.recipe import load_recipe  # importing fastpipes registers every section
    # before the fix this ran for minutes and took GBs: cap what loading may add to what the
    # imports mapped (a CUDA build of torch maps GBs of libraries before any work is done)
    with open("/proc/self/statm") as f:
        mapped = int(f.read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (mapped + (2 << 30), mapped + (2 << 30)))
    file, dotlist = sys.argv[1], sys.argv[2]
    out = {}
    for case, spec, over in (("file", file, None), ("override", {"attention": {}}, [dotlist])):
        t0 = time.perf_counter()
        try:
            load_recipe(spec, over)
            message = "loaded"
        except RecipeError as e:
            message = str(e)
        out[case] = [time.perf_counter() - t0, message]
    print(json.dumps(out))
""")


def test_billion_laughs_is_refused_in_well_under_two_seconds(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(billion_laughs(9))
    assert len(bomb.read_bytes()) < 500
    anchors = "[&a0 [x, x, x, x, x, x, x, x, x], " + ", ".join(
        f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)) + "]"

    r = subprocess.run([sys.executable, "-c", _BOMB_CHILD, str(bomb),
                        f"compile.options.x={anchors}"], capture_output=True, text=True,
                       timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    for case, (seconds, message) in json.loads(r.stdout.splitlines()[-1]).items():
        assert "once YAML aliases (*name) are expanded" in message, (case, message)
        assert seconds < 2.0, (case, seconds)


def test_recursive_alias_and_deep_nesting_are_refused(tmp_path):
    (tmp_path / "loop.yaml").write_text("attention: &a {components: [*a]}\n")
    with pytest.raises(RecipeError, match="contains itself"):
        load_recipe(str(tmp_path / "loop.yaml"))
    deep = "{a: " * 100 + "1" + "}" * 100
    (tmp_path / "deep.yaml").write_text(f"compile:\n  options: {deep}\n")
    with pytest.raises(RecipeError, match="nested more than 32 levels"):
        load_recipe(str(tmp_path / "deep.yaml"))
    (tmp_path / "deeper.yaml").write_text("description: " + "[" * 2000 + "]" * 2000 + "\n")
    with pytest.raises(RecipeError, match="nested too deeply"):  # too deep for the parser
        load_recipe(str(tmp_path / "deeper.yaml"))
    with pytest.raises(RecipeError, match=f"<overrides>: compile.options.x: nested more than"):
        load_recipe({"attention": {}}, ["compile.options.x=" + "[" * 100 + "]" * 100])
    looped: dict = {"attention": {}}
    looped["attention"]["self"] = looped
    with pytest.raises(RecipeError, match="contains itself"):
        load_recipe(looped)


def test_unreadable_files_are_recipe_errors(tmp_path):
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("description: café\nattention: {}\n".encode("latin-1"))
    with pytest.raises(RecipeError, match=r"not UTF-8 text \(byte 0xe9 at offset 16\)"):
        load_recipe(str(latin))
    big = tmp_path / "big.yaml"
    big.write_text("attention: {}\n" + "# padding\n" * 30_000)
    with pytest.raises(RecipeError, match="larger than 256 KiB"):
        load_recipe(str(big))
    oops = tmp_path / "oops.yaml"
    oops.write_text('description: "${oops"\nattention: {}\n')  # an OmegaConf grammar error
    with pytest.raises(RecipeError, match="description: interpolation is not allowed"):
        load_recipe(str(oops))


def test_one_bad_file_on_the_recipe_path_breaks_neither_list_nor_bench(recipe_dir, capsys,
                                                                      monkeypatch):
    from fastpipes.bench.runner import plan
    from fastpipes.cli.main import main

    (recipe_dir / "oops.yaml").write_text('description: "${oops"\nattention: {}\n')
    (recipe_dir / "latin.yaml").write_bytes(b"description: caf\xe9\nattention: {}\n")
    (recipe_dir / "deep.yaml").write_text("compile: {options: " + "{a: " * 100 + "1"
                                          + "}" * 101 + "\n")
    (recipe_dir / "fine.yaml").write_text("name: fine\nattention: {}\n")
    monkeypatch.setenv("COLUMNS", "200")  # one line per row
    assert main(["recipes", "list"]) == 0
    rows = {line.split("│")[1].strip(): line for line in capsys.readouterr().out.splitlines()
            if line.count("│") > 3}
    assert "invalid" in rows["oops"] and "interpolation is not" in rows["oops"]
    assert "invalid" in rows["latin"] and "not UTF-8 text" in rows["latin"]
    assert "invalid" in rows["deep"] and "invalid" not in rows["fine"]
    names = [p.name for p in plan("toy", None)]
    assert "fine" in names and "oops" not in names
