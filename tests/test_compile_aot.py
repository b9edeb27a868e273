"""compile.backend aot_inductor: one package per component and input shape, compiled at the
first call, reloaded (not recompiled) by a later accelerate() of the same model, fed the live
module's weights, refused when it is not to be trusted or does not match its checksum. One
small MLP, two AOTInductor compiles in the whole file (each ~10-40 s on 2 cores)."""
import json

import pytest
import torch
import torch.nn as nn

import fastpipes
from fastpipes import cache
from fastpipes.cache_clear import plan_clear
from fastpipes.errors import CacheError, RecipeError

AOT = {"family": "generic", "compile": {"backend": "aot_inductor"}}
X = torch.randn(4, 16)


def mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 8)).eval()


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """A cold first call: the package is compiled into the cache (shared by the tests)."""
    root = tmp_path_factory.mktemp("aot-cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("FASTPIPES_CACHE_DIR", str(root))
    m = mlp(0)
    want = m(X)
    report = fastpipes.accelerate(m, AOT)
    with torch.inference_mode():
        got = m(X)
    yield root, report, want, got
    mp.undo()


def test_the_first_call_compiles_a_package_into_the_cache(first):
    root, report, want, got = first
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    (pkg,) = (root / "aoti").glob("*.pt2")
    sums = json.loads(pkg.with_suffix(".json").read_text())
    assert len(sums["sha256"]) == 64 and pkg.stat().st_mode & 0o077 == 0
    assert report.extra["compile_cache"]["model"]["package"].startswith("compiled into")
    assert report.extra["compile_time_s"]["model"] > 0


def test_a_later_accelerate_loads_the_package_and_uses_the_live_weights(first, monkeypatch):
    root, *_ = first
    monkeypatch.setenv("FASTPIPES_CACHE_DIR", str(root))
    other = mlp(1)  # other weights, same model: the package holds code, not weights
    want = other(X)
    report = fastpipes.accelerate(other, AOT)
    with torch.inference_mode():
        got = other(X)
    assert report.extra["compile_cache"]["model"]["package"].startswith("loaded")
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert len(list((root / "aoti").glob("*.pt2"))) == 1  # nothing new compiled


def test_a_package_that_fails_its_checksum_is_not_loaded(first, monkeypatch, tmp_path):
    root, *_ = first
    monkeypatch.setenv("FASTPIPES_CACHE_DIR", str(root))
    (pkg,) = (root / "aoti").glob("*.pt2")
    sums = pkg.with_suffix(".json")
    good = sums.read_text()
    sums.write_text(json.dumps({"sha256": "0" * 64}))
    m = mlp(2)
    want = m(X)
    report = fastpipes.accelerate(m, AOT)
    with torch.inference_mode():
        got = m(X)
    assert any("SHA-256 does not match" in w for w in report.warnings)
    assert report.extra["compile_cache"]["model"]["package"].startswith("compiled into")
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert json.loads(sums.read_text())["sha256"] != "0" * 64  # rewritten with the new one
    assert good  # (the old checksum was a real one)


def test_a_cache_others_can_write_is_refused_before_anything_runs(tmp_path, monkeypatch):
    root = tmp_path / "open"
    root.mkdir(mode=0o777)
    root.chmod(0o777)
    monkeypatch.setenv("FASTPIPES_CACHE_DIR", str(root))
    m = mlp(0)
    with pytest.raises(fastpipes.FastpipesError, match="writable by"):
        fastpipes.accelerate(m, AOT)
    assert m._compiled_call_impl is None  # the pipeline is as it was


@pytest.mark.parametrize("section,key", [({"options": {"freezing": True}}, "options.freezing"),
                                         ({"dynamic": True}, "dynamic")])
def test_what_a_package_cannot_be_is_refused_when_the_recipe_loads(section, key):
    recipe = {**AOT, "compile": {**AOT["compile"], **section}}
    with pytest.raises(RecipeError, match=key.replace(".", r"\.")):
        fastpipes.load_recipe(recipe)


def test_cache_clear_removes_packages_and_keeps_what_only_looks_like_one(tmp_path, monkeypatch):
    root = tmp_path / "old"
    (root / "aoti").mkdir(parents=True)
    ours = root / "aoti" / "image_encoder-0123456789abcdef01234567.pt2"
    leftover = root / "aoti" / f".{ours.name}.4242.tmp.pt2"  # a killed writer's (files.temporary_name)
    for p in (ours, leftover, root / "aoti" / "my-model.pt2"):
        p.write_text("x")
    monkeypatch.setenv("FASTPIPES_CACHE_DIR", str(root))
    removed, kept = plan_clear(["aoti"])
    assert {ours, leftover} <= set(removed) and len(kept) == 1 and "my-model.pt2" in kept[0]
    assert "aoti" in cache.PARTS
