"""Fast start: compiled artifacts persist in the fastpipes cache and a second *process*
reuses them (Inductor's FX-graph cache, and the portable bundle when that is all there is)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fastpipes.cache
import fastpipes.cache_clear
from fastpipes.cache import inductor_location
from fastpipes.cache import INDUCTOR_ENV
from fastpipes.passes.compile_runtime import CompileCache, inductor_cache_dir

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = """
import json, os, sys, torch
import fastpipes
torch.manual_seed(int(sys.argv[2]))  # the weights
model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 8))
model.eval()
x = torch.randn(4, 32, generator=torch.Generator().manual_seed(7))
with torch.no_grad():
    ref = model(x)  # eager FP32, before accelerate
before = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
report = fastpipes.accelerate(model, {"compile": {"cache": sys.argv[1] == "on",
                                                  "options": {"freezing": sys.argv[3] == "1"}}})
with torch.no_grad():
    err = (model(x) - ref).abs().max().item()
from torch._inductor.runtime.cache_dir_utils import default_cache_dir
after = os.environ.get("TORCHINDUCTOR_CACHE_DIR")  # torch exports its own default on use
print(json.dumps({"extra": report.extra, "warnings": report.warnings, "err": err,
                  "env_kept": after in (before, default_cache_dir())}))
"""


def _start(cache: Path, mode: str = "on", seed: int = 0, freezing: bool = False) -> dict:
    """One fresh process: accelerate with compile, call once, report what the cache did."""
    env = {k: v for k, v in os.environ.items() if k != INDUCTOR_ENV}
    env.update(FASTPIPES_CACHE_DIR=str(cache), PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode, str(seed), str(int(freezing))],
                         env=env, capture_output=True,
                         text=True, timeout=600, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_second_process_hits_the_cache_and_bundle_survives_a_lost_inductor_dir(tmp_path):
    cold = _start(tmp_path)
    info = cold["extra"]["compile_cache"]["model"]
    assert info["fxgraph_cache_miss"] >= 1 and "fxgraph_cache_hit" not in info
    assert not info["bundle_loaded"] and Path(info["bundle"]).is_file()
    assert info["dir"] == str(tmp_path / "inductor") and any((tmp_path / "inductor").iterdir())
    assert cold["err"] < 1e-5 and cold["env_kept"] and not cold["warnings"]

    warm = _start(tmp_path)
    info = warm["extra"]["compile_cache"]["model"]
    assert info["fxgraph_cache_hit"] >= 1 and "fxgraph_cache_miss" not in info
    assert warm["err"] < 1e-5

    fastpipes.cache_clear.clear(["inductor"])  # only the portable bundle is left
    bundle_only = _start(tmp_path)
    info = bundle_only["extra"]["compile_cache"]["model"]
    assert info["bundle_loaded"] and info["fxgraph_cache_hit"] >= 1
    assert bundle_only["err"] < 1e-5


def test_warm_start_with_frozen_weights_computes_with_the_new_weights(tmp_path):
    """freezing makes weights constants of the graph: a second process with a model of the
    same structure but other weights must compute with its own weights. In torch 2.13 a
    really frozen graph bypasses both the FX-graph and the AOTAutograd caches (each process
    compiles again); this test pins that, so a torch that starts caching frozen graphs is
    noticed and the claim about the new weights is then checked on a hit."""
    first = _start(tmp_path, seed=0, freezing=True)
    other = _start(tmp_path, seed=1, freezing=True)
    for run in (first, other):
        info = run["extra"]["compile_cache"]["model"]
        assert info.get("fxgraph_cache_bypass", 0) >= 1 and "fxgraph_cache_hit" not in info
    assert first["err"] < 1e-5 and other["err"] < 1e-5  # each vs its own eager output


def test_cache_off_writes_nothing_to_the_fastpipes_cache(tmp_path):
    result = _start(tmp_path, mode="off")
    assert "compile_cache" not in result["extra"] and result["err"] < 1e-5
    assert not (tmp_path / "inductor").exists() and not (tmp_path / "artifacts").exists()


def test_cache_dir_is_scoped_and_restores_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(INDUCTOR_ENV, raising=False)
    with inductor_cache_dir(tmp_path / "a"):
        assert os.environ[INDUCTOR_ENV] == str(tmp_path / "a")
    assert INDUCTOR_ENV not in os.environ
    monkeypatch.setenv(INDUCTOR_ENV, str(tmp_path / "mine"))
    with inductor_cache_dir(tmp_path / "b"):
        pass
    assert os.environ[INDUCTOR_ENV] == str(tmp_path / "mine")


def test_a_users_own_inductor_dir_wins(tmp_path, monkeypatch):
    monkeypatch.setenv(INDUCTOR_ENV, str(tmp_path / "mine"))
    where = inductor_location(persist=True)
    cache = CompileCache.for_component("model", torch.nn.Linear(2, 2), {"backend": "inductor"},
                                       where)
    assert cache.inductor_dir is None and cache.where() == str(tmp_path / "mine")
    assert not where.warnings and cache.bundle.parent == fastpipes.cache.cache_dir() / "artifacts"
    monkeypatch.delenv(INDUCTOR_ENV)
    where = inductor_location(persist=True)
    assert where.inductor_dir == fastpipes.cache.cache_dir() / "inductor"


def test_bundle_key_follows_structure_and_compile_settings():
    where = inductor_location(persist=True)

    def bundle(module, kw):
        return CompileCache.for_component("m", module, kw, where).bundle

    a = bundle(torch.nn.Linear(2, 2), {"backend": "inductor"})
    b = bundle(torch.nn.Linear(2, 3), {"backend": "inductor"})
    c = bundle(torch.nn.Linear(2, 2), {"backend": "inductor", "mode": "max-autotune"})
    same = bundle(torch.nn.Linear(2, 2), {"backend": "inductor"})
    assert len({a, b, c}) == 3 and same == a


def test_corrupt_bundle_is_a_warning_not_a_crash(tmp_path):
    cache = CompileCache(None, tmp_path / "bad.bin")
    cache.bundle.write_bytes(b"not a bundle")
    warnings: list[str] = []
    assert cache.load_bundle(warnings.append) is False
    assert len(warnings) == 1 and "bad.bin" in warnings[0]


def test_cache_cli_reports_and_clears(tmp_path, monkeypatch, capsys):
    from fastpipes.cli.main import main

    monkeypatch.setenv("FASTPIPES_CACHE_DIR", str(tmp_path))
    (fastpipes.cache.open_part("auto") / "k.json").write_text("{}")
    (fastpipes.cache.open_part("inductor") / "x").write_bytes(b"12345")
    assert main(["cache", "info", "--json"]) == 0
    usage = json.loads(capsys.readouterr().out)
    assert usage["auto"]["files"] == 1 and usage["inductor"]["bytes"] == 5
    assert usage["artifacts"]["files"] == 0
    assert main(["cache", "clear", "auto"]) == 0
    assert not (tmp_path / "auto").exists() and (tmp_path / "inductor").exists()
    assert main(["cache", "clear"]) == 0
    assert not (tmp_path / "inductor").exists()
    assert main(["cache", "clear", "nope"]) == 2
    assert "allowed: auto, inductor, artifacts" in capsys.readouterr().err


# -- what the compile cache trusts, and a cache that cannot be used (issue #14: 3, 11, 14) --

def _mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(),
                               torch.nn.Linear(32, 8)).eval()


def _first_call_cache(model) -> CompileCache | None:
    return model._compiled_call_impl.cache  # the FirstCall installed by the compile pass


def test_accelerate_creates_the_cache_directories_private(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTPIPES_CACHE_DIR", str(tmp_path / "new" / "cache"))
    fastpipes.accelerate(_mlp(), {"compile": {}})  # lazy: nothing is compiled here
    for path in (tmp_path / "new" / "cache", tmp_path / "new" / "cache" / "inductor",
                 tmp_path / "new" / "cache" / "artifacts"):
        assert path.is_dir() and path.stat().st_mode & 0o777 == 0o700, path


def _make_cache(case: str, root: Path, read_only) -> tuple[dict[str, str], str]:
    """An unusable or untrusted cache of kind `case`: (environment to set, warning text)."""
    if case == "file":
        root.write_text("not a directory")
        return {"FASTPIPES_CACHE_DIR": str(root)}, "is a file, not a directory"
    root.mkdir(mode=0o700)
    env = {"FASTPIPES_CACHE_DIR": str(root)}
    if case == "read-only":
        read_only(root)
        return env, "is not writable"
    if case == "group-writable":
        root.chmod(0o770)
        return env, "writable by group (mode 0o770;"
    if case == "world-writable":
        root.chmod(0o777)
        return env, "writable by group and others (mode 0o777;"
    if case == "other-owner":
        if os.geteuid() != 0:
            pytest.skip("only root can give a directory to another user")
        os.chown(root, 65534, 65534)
        return env, "owned by another user (uid 65534"
    if case == "user-inductor-file":
        (root / "inductor-file").write_text("")
        return {INDUCTOR_ENV: str(root / "inductor-file")}, "is a file, not a directory"
    assert case == "user-inductor-world-writable"
    (root / "shared").mkdir()
    (root / "shared").chmod(0o777)
    return {INDUCTOR_ENV: str(root / "shared")}, "writable by group and others"


@pytest.mark.parametrize("cache_on", [True, False])
@pytest.mark.parametrize("case", ["file", "read-only", "group-writable", "world-writable",
                                  "other-owner", "user-inductor-file",
                                  "user-inductor-world-writable"])
def test_an_unusable_or_untrusted_cache_is_replaced_when_accelerate_runs(
        tmp_path, monkeypatch, read_only, case, cache_on):
    """Checked at accelerate() time: the compile gets a private temporary Inductor
    directory, and the report says why; the bad directory is never read or written."""
    root = tmp_path / "cache"
    env, why = _make_cache(case, root, read_only)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    if not cache_on and INDUCTOR_ENV not in env:
        return  # cache off and no TORCHINDUCTOR_CACHE_DIR: fastpipes' cache is not used
    model = _mlp()
    report = fastpipes.accelerate(model, {"compile": {"cache": cache_on}})
    assert any(why in w and "private temporary Inductor directory" in w
               for w in report.warnings), report.warnings
    cache = _first_call_cache(model)
    assert cache.inductor_dir.name.startswith("fastpipes-inductor-")
    assert cache.inductor_dir.stat().st_mode & 0o777 == 0o700
    assert cache.bundle is None or not cache.bundle.is_relative_to(root)
    assert "temporary" in report.passes[0].changes[0]


def test_compile_runs_when_the_cache_directory_is_a_file(tmp_path, monkeypatch):
    """Issue #14 item 3: accelerate() succeeded, then the first forward raised (even with
    fallback eager). One real Inductor compile."""
    (tmp_path / "cache").write_text("")
    monkeypatch.setenv("FASTPIPES_CACHE_DIR", str(tmp_path / "cache"))
    model = _mlp()
    x = torch.randn(4, 16)
    with torch.no_grad():
        ref = model(x)
        report = fastpipes.accelerate(model, {"compile": {"fallback": "eager"}})
        out = model(x)
    assert torch.allclose(out, ref, atol=1e-5)
    assert report.passes[0].status == "applied"  # compiled, not fallen back to eager
    assert report.extra["compile_cache"]["model"]["fxgraph_cache_miss"] >= 1
    assert any("is a file, not a directory" in w for w in report.warnings)


def test_a_bundle_others_can_write_is_not_loaded(tmp_path, monkeypatch):
    loads = []
    monkeypatch.setattr(torch.compiler, "load_cache_artifacts", lambda b: loads.append(b))
    bundle = tmp_path / "model-0123.bin"
    bundle.write_bytes(b"a pickle from someone else")
    bundle.chmod(0o666)
    warnings: list[str] = []
    assert CompileCache(None, bundle).load_bundle(warnings.append) is False
    assert not loads and len(warnings) == 1
    assert "writable by group and others" in warnings[0] and "is code" in warnings[0]


def test_bundles_are_saved_readable_and_writable_by_you_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.compiler, "save_cache_artifacts", lambda: (b"bundle", None))
    cache = CompileCache(None, tmp_path / "model-0123.bin")
    warnings: list[str] = []
    cache.save_bundle(warnings.append)
    assert not warnings and cache.bundle.read_bytes() == b"bundle"
    assert cache.bundle.stat().st_mode & 0o777 == 0o600


def _fxgraph_entries(cache: Path) -> list[Path]:
    return [p for p in (cache / "inductor" / "fxgraph").rglob("*") if p.is_file()]


def test_a_wrong_object_pickle_in_the_fxgraph_cache_is_dropped_and_compiled_again(
        tmp_path, monkeypatch):
    """Issue #14 item 11: torch 2.13 asserts on an FX-graph entry that unpickles to the wrong
    object, and every run failed until the cache was cleared by hand."""
    import pickle

    monkeypatch.setenv("FASTPIPES_CACHE_DIR", str(tmp_path))
    x = torch.randn(4, 16)
    torch._dynamo.reset()  # an earlier test's compile of the same code must not be reused
    with torch.no_grad():
        first = _mlp()
        fastpipes.accelerate(first, {"compile": {}})
        first(x)  # cold compile: fills inductor/fxgraph
        entries = _fxgraph_entries(tmp_path)
        assert entries
        for entry in entries:
            entry.write_bytes(pickle.dumps({"not": "a compiled graph"}))
        fastpipes.cache_clear.clear(["artifacts"])  # the bundle would put a good entry back
        torch._dynamo.reset()
        model = _mlp()
        ref = model(x)
        report = fastpipes.accelerate(model, {"compile": {}})  # fallback: error
        out = model(x)
    assert torch.allclose(out, ref, atol=1e-5)
    assert any("dropped the unreadable Inductor cache entry" in w for w in report.warnings)
    assert all(pickle.loads(p.read_bytes()).__class__.__name__ != "dict"
               for p in _fxgraph_entries(tmp_path))  # the bad entry is gone for good


class _Exploit:
    """A pickle that creates a file when loaded (what a crafted cache entry can do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.slow
def test_a_crafted_pickle_in_a_cache_others_can_write_never_runs(tmp_path, monkeypatch):
    """Issue #14 item 14, end to end: the cache was world-writable, someone put a pickle in
    it; the next compile must not load it (before: the command ran)."""
    import pickle

    cache, marker = tmp_path / "cache", tmp_path / "exploited"
    monkeypatch.setenv("FASTPIPES_CACHE_DIR", str(cache))
    x = torch.randn(4, 16)
    with torch.no_grad():
        first = _mlp()
        fastpipes.accelerate(first, {"compile": {}})
        first(x)
        entries = _fxgraph_entries(cache)
        assert entries  # else nothing is poisoned and the test passes vacuously
        crafted = pickle.dumps(_Exploit(marker))
        for entry in entries:
            entry.write_bytes(crafted)
        fastpipes.cache_clear.clear(["artifacts"])
        cache.chmod(0o777)
        # the crafted entries are still there, where the next compile looks
        assert all(e.read_bytes() == crafted for e in entries) and not marker.exists()
        torch._dynamo.reset()
        model = _mlp()
        ref = model(x)
        report = fastpipes.accelerate(model, {"compile": {}})
        out = model(x)
    assert not marker.exists()
    assert torch.allclose(out, ref, atol=1e-5)
    assert any("writable by group and others" in w for w in report.warnings)
