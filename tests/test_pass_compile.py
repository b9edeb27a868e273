"""compile pass: kwargs (mode merged into options), lazy in-place compile, first-call timing,
eager fallback. One real Inductor compile (tiny MLP); the rest use the eager backend."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import fastpipes
from fastpipes.errors import FastpipesError
from fastpipes.passes.compile import (CompileBackend, CompileConfig, CompileMode, FirstCall,
                                      compile_kwargs, compile_time_s)


def graphs() -> int:
    """How many graphs Dynamo has captured in this process (proves compile really traced)."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 8)).eval(), torch.randn(4, 16)


class Breaks(nn.Module):
    """A graph break: fine for dynamo normally, an error with fullgraph=True."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        x = self.fc(x)
        torch._dynamo.graph_break()
        return x * 2


def test_kwargs_plain_mode_without_options():
    kw = compile_kwargs(CompileConfig(mode=CompileMode.max_autotune))
    assert kw == {"backend": "inductor", "fullgraph": False, "dynamic": None, "mode": "max-autotune"}


def test_kwargs_merge_mode_into_options_and_user_options_win():
    from torch._inductor import list_mode_options

    cfg = CompileConfig(mode=CompileMode.max_autotune_no_cudagraphs,
                        options={"freezing": True, "coordinate_descent_tuning": False})
    kw = compile_kwargs(cfg)
    assert "mode" not in kw  # torch.compile refuses mode and options together
    expected = {**list_mode_options("max-autotune-no-cudagraphs"), "freezing": True,
                "coordinate_descent_tuning": False}
    assert kw["options"] == expected and kw["options"]["max_autotune"] is True


def test_debug_backends_get_neither_mode_nor_options():
    kw = compile_kwargs(CompileConfig(backend=CompileBackend.eager, mode=CompileMode.max_autotune,
                                      options={"freezing": True}))
    assert kw == {"backend": "eager", "fullgraph": False, "dynamic": None}


def test_apply_is_lazy_in_place_and_says_what_is_ignored():
    model, _ = mlp()
    report = fastpipes.accelerate(model, {"compile": {"backend": "eager", "mode": "max-autotune"}})
    assert isinstance(model._compiled_call_impl, FirstCall)
    assert compile_time_s(model) is None  # nothing compiled before the first call
    assert "mode/options ignored by backend eager" in report.passes[0].changes[0]


def test_inductor_compiles_tiny_mlp_and_times_the_first_call(capsys):
    model, x = mlp(1)
    with torch.no_grad():
        ref = model(x)
    report = fastpipes.accelerate(model, {"compile": {}})
    before = graphs()
    with torch.no_grad():
        y = model(x)
        y2 = model(x)
    assert graphs() == before + 1  # an nn.Sequential root is really traced, once
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(y2, ref, rtol=1e-4, atol=1e-5)
    assert compile_time_s(model) > 0
    assert report.extra["compile_time_s"] == {"model": compile_time_s(model)}
    # after the first call the raw compiled function is installed: no extra Python frame
    assert model._compiled_call_impl is not None and not isinstance(model._compiled_call_impl, FirstCall)
    # the first call says which component compiles, and how long it took (issue 27)
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("[compile")]
    assert err[0] == "[compile    0.0s] model: first call, compiling it (torch.compile)"
    assert "model: first call, compiling it (torch.compile): done after" in err[-1]


def test_verbose_false_compiles_without_a_word(capsys):
    model, x = mlp(2)
    fastpipes.accelerate(model, {"compile": {"backend": "eager"}}, verbose=False)
    with torch.no_grad():
        model(x)
    assert compile_time_s(model) > 0 and capsys.readouterr().err == ""


def test_freezing_really_freezes_and_restores_the_global_flag():
    """options.freezing alone reaches Inductor but not Dynamo (torch 2.13): the pass sets the
    global flag around each call, so the weights become constants of the graph (an in-place
    weight change after the first call is not seen: that is what freezing means) and the
    flag is off again outside the call."""
    from torch._inductor import config

    model, x = mlp(2)
    with torch.no_grad():
        ref = model(x)
    fastpipes.accelerate(model, {"compile": {"options": {"freezing": True}, "cache": False}})
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref, rtol=1e-4, atol=1e-5)
        assert config.freezing is False
        model[2].bias.add_(1.0)  # a graph input would see this; a frozen constant does not
        torch.testing.assert_close(model(x), ref, rtol=1e-4, atol=1e-5)
    assert config.freezing is False


def test_a_frozen_recipe_asking_for_the_other_prepacking_is_warned(monkeypatch):
    """Inductor keeps the weight prepacking of the process's first frozen compile: a recipe
    asking for the other one is told it will not get it (nothing is compiled here)."""
    from fastpipes.passes import compile as compile_pass

    monkeypatch.setattr(compile_pass, "_FIRST_FROZEN", {"prepack": True})
    model, _ = mlp()
    off = {"compile": {"options": {"freezing": True, "cpp.weight_prepack": False}}}
    report = fastpipes.accelerate(model, off)
    assert any("cpp.weight_prepack=false will not take effect" in w and "weight_prepack=true"
               in w for w in report.warnings), report.warnings
    for same in ({"compile": {"options": {"freezing": True}}},
                 {"compile": {"options": {"freezing": False, "cpp.weight_prepack": False}}}):
        model, _ = mlp()
        assert not fastpipes.accelerate(model, same).warnings  # asks for what it gets
    monkeypatch.setattr(compile_pass, "_FIRST_FROZEN", {})  # nothing frozen yet: no warning
    model, _ = mlp()
    assert not fastpipes.accelerate(model, off).warnings


def test_fallback_eager_turns_a_compile_failure_into_a_visible_warning():
    torch.manual_seed(0)
    model, x = Breaks(), torch.randn(2, 8)
    with torch.no_grad():
        ref = model(x)
    report = fastpipes.accelerate(model, {"compile": {"backend": "eager", "fullgraph": True,
                                                      "fallback": "eager"}})
    with torch.no_grad():
        y = model(x)
    torch.testing.assert_close(y, ref, rtol=0, atol=0)
    assert model._compiled_call_impl is None  # eager from now on
    assert report.passes[0].status == "fallback"
    assert any("torch.compile failed, running eager" in w for w in report.warnings)


def test_fallback_error_raises_the_compile_failure():
    model, x = Breaks(), torch.randn(2, 8)
    fastpipes.accelerate(model, {"compile": {"backend": "eager", "fullgraph": True}})
    with pytest.raises(torch._dynamo.exc.Unsupported):
        model(x)


def test_precision_autocast_then_compile_traces_the_wrapper():
    model, x = mlp(2)
    with torch.no_grad():
        ref = model(x)
    report = fastpipes.accelerate(model, {"precision": {}, "compile": {"backend": "aot_eager"}})
    assert report.applied == ["precision", "compile"]
    before = graphs()
    with torch.no_grad():
        y = model(x)
    assert graphs() == before + 1
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, ref, rtol=2e-2, atol=2e-2)


def test_backend_ipex_without_ipex_is_a_clear_error_and_leaves_the_model():
    if fastpipes.hardware.import_ipex()[0] is not None:
        pytest.skip("intel_extension_for_pytorch imports here")
    model, _ = mlp()
    with pytest.raises(FastpipesError, match="intel-extension-for-pytorch"):
        fastpipes.accelerate(model, {"ipex": {"fallback": "native"}, "compile": {"backend": "ipex"}})
    assert model._compiled_call_impl is None


def test_fallback_eager_does_not_hide_errors_of_the_model_itself():
    model, _ = mlp(3)
    report = fastpipes.accelerate(model, {"compile": {"backend": "eager", "fallback": "eager"}})
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        model(torch.randn(2, 5))  # wrong feature size: eager fails too
    assert report.warnings == [] and report.passes[0].status == "applied"
    assert model._compiled_call_impl is not None


def test_unknown_inductor_option_is_a_recipe_error_with_a_suggestion():
    model, _ = mlp()
    with pytest.raises(fastpipes.RecipeError, match=r"compile.options.freezeing: unknown Inductor "
                                                    r"option \(did you mean 'freezing'\?\)"):
        fastpipes.accelerate(model, {"compile": {"options": {"freezeing": True}}})
    assert model._compiled_call_impl is None
