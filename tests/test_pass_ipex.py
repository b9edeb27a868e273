"""ipex pass: a missing/broken IPEX is an error or a visible fallback, never a crash; the
glue around ipex.optimize / ipex.llm.optimize is checked with stand-ins here. The real IPEX
(torch 2.8 only) runs in tests/test_ipex_real.py: `make test-ipex`."""
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
    # the passes and families load on first use (import fastpipes alone loads neither)
    code = ("import sys, fastpipes, fastpipes.passes, fastpipes.families, fastpipes.api\n"
            "assert 'intel_extension_for_pytorch' not in sys.modules")
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
    assert calls == [(torch.bfloat16, True, False)]  # asked in place; this stand-in copies
    assert "forward delegates to a ipex.optimize(dtype=bfloat16) copy" in report.passes[0].changes[0]
    assert model[0].weight.dtype == torch.float32  # the original is left alone
    y = model(x.bfloat16())
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), ref, rtol=3e-2, atol=3e-2)
    assert "_fastpipes_ipex_module" not in dict(model.named_modules())  # not a submodule


# ---- ipex.llm.optimize glue, with a stand-in (the real one runs in `make test-ipex`) --------

def fake_llm_ipex(calls: list, converted: bool = True):
    """Stands in for IPEX: llm.optimize records its arguments and, like the real one on a
    supported model, puts modules of IPEX's transformers package into the model."""
    marker = type("_IPEXDecoderLayerCPU", (nn.Identity,),
                  {"__module__": "intel_extension_for_pytorch.transformers.models.cpu"})

    def optimize(model, dtype=None, inplace=False):
        calls.append((dtype, inplace, list(model.config.architectures or [])))
        if converted:
            model.add_module("ipex_layer", marker())
        return model if inplace else copy.deepcopy(model)

    return types.SimpleNamespace(llm=types.SimpleNamespace(optimize=optimize))


def test_llm_optimize_converts_the_model_in_place_and_names_its_architecture(monkeypatch):
    # in place: IPEX's generate path lives on the instance the user calls generate() on
    from fastpipes.llama.pipeline import build_llama

    calls = []
    monkeypatch.setattr(ipex_pass, "import_ipex", lambda: (fake_llm_ipex(calls), ""))
    model = build_llama("tiny")
    assert not model.config.architectures  # built from a config, not from_pretrained
    report = fastpipes.accelerate(model, "llama_ipex")
    assert calls == [(torch.float32, True, ["LlamaForCausalLM"])]
    assert report.record("ipex").changes == [
        "model: config.architectures = ['LlamaForCausalLM']",
        "model: ipex.llm.optimize(dtype=float32) in place"]
    assert hasattr(model, "ipex_layer")


def test_llm_optimize_that_converts_nothing_is_an_error_and_restores(monkeypatch):
    from fastpipes.llama.pipeline import build_llama

    calls = []
    monkeypatch.setattr(ipex_pass, "import_ipex", lambda: (fake_llm_ipex(calls, False), ""))
    model = build_llama("tiny")
    with pytest.raises(FastpipesError, match="left 'model' .LlamaForCausalLM. unconverted"):
        fastpipes.accelerate(model, {"ipex": {"llm": True}})
    assert calls and not model.config.architectures  # the config edit was undone


def test_bf16_ipex_optimize_without_autocast_warns(monkeypatch):
    fake = types.SimpleNamespace(optimize=lambda m, dtype=None, inplace=False: copy.deepcopy(m))
    monkeypatch.setattr(ipex_pass, "import_ipex", lambda: (fake, ""))
    report = fastpipes.accelerate(mlp()[0], {"ipex": {"dtype": "bfloat16"}})
    assert any("expects BF16 inputs or autocast" in w for w in report.warnings)
    report = fastpipes.accelerate(mlp()[0], {"ipex": {"dtype": "bfloat16"},
                                             "precision": {"mode": "autocast"}})
    assert not any("expects BF16 inputs" in w for w in report.warnings)


# ---- requires: {ipex: true} ---------------------------------------------------------------

def test_requires_ipex_is_unmet_with_the_reason_where_ipex_does_not_import(monkeypatch):
    from fastpipes.hardware import detect, unmet_requirements
    from fastpipes.recipe.schema import Requires

    monkeypatch.setattr(fastpipes.hardware, "ipex_unavailable", lambda: "it is not installed")
    unmet = unmet_requirements(Requires(ipex=True), detect())
    assert unmet == ["the recipe needs Intel Extension for PyTorch, which does not import "
                     "here: it is not installed"]
    assert unmet_requirements(Requires(), detect()) == []
    monkeypatch.setattr(fastpipes.hardware, "ipex_unavailable", lambda: "")
    assert unmet_requirements(Requires(ipex=True), detect()) == []


def test_ipex_availability_is_probed_in_a_child_process(monkeypatch):
    hw = fastpipes.hardware
    probed = []
    monkeypatch.delitem(sys.modules, "intel_extension_for_pytorch", raising=False)
    monkeypatch.setattr(hw, "_ipex_version_problem",
                        lambda: ("", "intel-extension-for-pytorch 2.8.0 is installed but "
                                     "incompatible with torch 2.8.0 (needs 2.8.*)", "; advice"))
    monkeypatch.setattr(hw, "_probe_import",
                        lambda module: probed.append(module) or (False, "OSError: libfoo.so"))
    hw.ipex_unavailable.cache_clear()
    try:
        why = hw.ipex_unavailable()
        assert hw.ipex_unavailable() == why  # asked once per process
    finally:
        hw.ipex_unavailable.cache_clear()
    assert probed == ["intel_extension_for_pytorch"]
    assert why.endswith("(needs 2.8.*): OSError: libfoo.so; advice")
    assert "intel_extension_for_pytorch" not in sys.modules


@pytest.mark.skipif(ipex_imports(), reason="IPEX works here")
def test_ipex_recipes_are_visibly_unavailable_and_never_auto_candidates():
    from fastpipes.auto import candidate_recipes
    from fastpipes.recipe import AutoConfig
    from fastpipes.bench.plan import plan
    from fastpipes.hardware import detect
    from fastpipes.llama.pipeline import build_llama

    model = build_llama("tiny")
    # refused by the preflight, before the model is touched
    with pytest.raises(FastpipesError, match="IPEX is unavailable: intel-extension-for-pytorch"):
        fastpipes.accelerate(model, "llama_ipex")
    assert model.config._attn_implementation == "eager" and not model.config.architectures
    candidates = candidate_recipes("llama", detect(), AutoConfig())
    assert "llama_attn_sdpa" in candidates
    assert not {"llama_ipex", "llama_ipex_bf16"} & set(candidates)
    rows = {p.name: p for p in plan("llama", None)}
    assert not rows["llama_ipex"].run
    assert "needs Intel Extension for PyTorch, which does not import" in rows["llama_ipex"].reason
