"""Fast start: compiled artifacts persist in the fastpipes cache and a second *process*
reuses them (Inductor's FX-graph cache, and the portable bundle when that is all there is)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

import fastpipes.cache
from fastpipes.passes.compile import INDUCTOR_ENV, CompileCache, inductor_cache_dir

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

    fastpipes.cache.clear(["inductor"])  # only the portable bundle is left
    bundle_only = _start(tmp_path)
    info = bundle_only["extra"]["compile_cache"]["model"]
    assert info["bundle_loaded"] and info["fxgraph_cache_hit"] >= 1
    assert bundle_only["err"] < 1e-5


def test_warm_start_with_frozen_weights_computes_with_the_new_weights(tmp_path):
    """freezing makes weights constants of the graph: a cache hit for a model of the same
    structure but other weights must still compute with its own weights."""
    first = _start(tmp_path, seed=0, freezing=True)
    other = _start(tmp_path, seed=1, freezing=True)
    assert first["extra"]["compile_cache"]["model"]["fxgraph_cache_miss"] >= 1
    assert other["extra"]["compile_cache"]["model"]["fxgraph_cache_hit"] >= 1
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
    cache = CompileCache.for_component("model", torch.nn.Linear(2, 2), {"backend": "inductor"})
    assert cache.inductor_dir is None and cache.where() == str(tmp_path / "mine")
    monkeypatch.delenv(INDUCTOR_ENV)
    cache = CompileCache.for_component("model", torch.nn.Linear(2, 2), {"backend": "inductor"})
    assert cache.inductor_dir == fastpipes.cache.cache_dir() / "inductor"


def test_bundle_key_follows_structure_and_compile_settings():
    a = CompileCache.for_component("m", torch.nn.Linear(2, 2), {"backend": "inductor"})
    b = CompileCache.for_component("m", torch.nn.Linear(2, 3), {"backend": "inductor"})
    c = CompileCache.for_component("m", torch.nn.Linear(2, 2), {"backend": "inductor",
                                                                 "mode": "max-autotune"})
    same = CompileCache.for_component("m", torch.nn.Linear(2, 2), {"backend": "inductor"})
    assert len({a.bundle, b.bundle, c.bundle}) == 3 and same.bundle == a.bundle


def test_corrupt_bundle_is_a_warning_not_a_crash(tmp_path):
    cache = CompileCache(None, tmp_path / "bad.bin")
    cache.bundle.write_bytes(b"not a bundle")
    warnings: list[str] = []
    assert cache.load_bundle(warnings.append) is False
    assert len(warnings) == 1 and "bad.bin" in warnings[0]


def test_cache_cli_reports_and_clears(tmp_path, monkeypatch, capsys):
    from fastpipes.cli.main import main

    monkeypatch.setenv("FASTPIPES_CACHE_DIR", str(tmp_path))
    (tmp_path / "auto").mkdir()
    (tmp_path / "auto" / "k.json").write_text("{}")
    (tmp_path / "inductor").mkdir()
    (tmp_path / "inductor" / "x").write_bytes(b"12345")
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
