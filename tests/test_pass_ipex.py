"""ipex pass: a missing/broken IPEX is an error or a visible fallback, never a crash; the
glue around ipex.optimize is checked with a stand-in module (real IPEX needs torch 2.8)."""
from __future__ import annotations

import copy
import subprocess
import sys
import types

import pytest
import torch
import torch.nn as nn

import fastpipes
import fastpipes.passes.ipex as ipex_pass
from fastpipes.errors import FastpipesError


def ipex_imports() -> bool:
    return fastpipes.hardware.import_ipex()[0] is not None


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)), torch.randn(3, 8)


def test_import_fastpipes_never_imports_ipex():
    code = "import sys, fastpipes; assert 'intel_extension_for_pytorch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.skipif(ipex_imports(), reason="IPEX works here")
def test_missing_ipex_with_fallback_error_says_why_and_what_to_do():
    model, _ = mlp()
    with pytest.raises(FastpipesError) as e:
        fastpipes.accelerate(model, {"ipex": {}})
    text = str(e.value)
    assert ("not installed" in text) or ("installed but incompatible with torch" in text)
    assert "fallback: native" in text


@pytest.mark.skipif(ipex_imports(), reason="IPEX works here")
def test_missing_ipex_with_fallback_native_is_recorded_as_fallback():
    model, x = mlp()
    ref = model(x)
    report = fastpipes.accelerate(model, {"ipex": {"fallback": "native"}})
    rec = report.passes[0]
    assert rec.name == "ipex" and rec.status == "fallback" and "native PyTorch" in rec.reason
    assert report.skipped == {"ipex": rec.reason}
    assert any(w.startswith("ipex: IPEX unavailable") for w in report.warnings)
    torch.testing.assert_close(model(x), ref, rtol=0, atol=0)


def test_incompatible_version_is_not_imported(monkeypatch):
    monkeypatch.setattr(fastpipes.hardware.metadata, "version", lambda dist: "2.8.0")
    monkeypatch.setattr(torch, "__version__", "2.13.0+cpu")
    mod, why = fastpipes.hardware.import_ipex()
    assert mod is None
    assert "2.8.0 is installed but incompatible with torch 2.13.0+cpu (needs 2.8.*)" in why


def test_optimized_copy_replaces_the_forward_of_a_plain_module(monkeypatch):
    calls = []

    def optimize(model, dtype=None, inplace=False):  # stands in for ipex.optimize
        calls.append((dtype, inplace, model.training))
        return copy.deepcopy(model).to(dtype)

    fake = types.SimpleNamespace(optimize=optimize)
    monkeypatch.setattr(ipex_pass, "import_ipex", lambda: (fake, ""))
    model, x = mlp(1)
    ref = model(x)
    report = fastpipes.accelerate(model, {"ipex": {"dtype": "bfloat16"}})
    assert calls == [(torch.bfloat16, False, False)]
    assert "forward delegates to a ipex.optimize(dtype=bfloat16) copy" in report.passes[0].changes[0]
    assert model[0].weight.dtype == torch.float32  # the original is left alone
    y = model(x.bfloat16())
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), ref, rtol=3e-2, atol=3e-2)
    assert "_fastpipes_ipex_module" not in dict(model.named_modules())  # not a submodule
