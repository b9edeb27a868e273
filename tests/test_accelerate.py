"""accelerate(): hardware gate and strict, all-or-nothing restore, typed errors, generic recipes."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn as nn

import fastpipes
import fastpipes.apply
import fastpipes.snapshot
from fastpipes.errors import (ConflictError, RecipeError, FastpipesError, HardwareError, PassError,
                              PreflightError, UnsupportedPipelineError)
from fastpipes.hardware import detect
from fastpipes.passes.base import PASSES, PassSpec


class ConvNet(nn.Module):
    """Conv -> GroupNorm -> pool -> Linear, with a buffer: every kind of state a pass touches."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.GroupNorm(2, 8)
        self.head = nn.Linear(8, 4)
        self.register_buffer("scale", torch.tensor(0.5))

    def forward(self, x):  # x: [B, 3, H, W]
        x = torch.relu(self.norm(self.conv(x)))
        return self.head(x.mean((2, 3))) * self.scale


def make(seed=0):
    torch.manual_seed(seed)
    return ConvNet().eval(), torch.randn(2, 3, 8, 8)


def fake_hardware(monkeypatch, bf16: bool):
    hw = dataclasses.replace(detect(), bf16_native=bf16, fp16_native=False, cuda_devices=[])
    monkeypatch.setattr(fastpipes.apply, "detect", lambda *a, **k: hw)
    return hw


def state(model: nn.Module) -> dict:
    """Everything all-or-nothing promises to keep: values, dtypes, strides, hooks, attributes."""
    return {
        "tensors": {k: (v.clone(), v.dtype, v.stride()) for k, v in model.state_dict().items()},
        "hooks": {n: (dict(m._forward_hooks), dict(m._forward_pre_hooks))
                  for n, m in model.named_modules()},
        "attrs": {n: sorted(m.__dict__) for n, m in model.named_modules()},
        "compiled": {n: m._compiled_call_impl for n, m in model.named_modules()},
    }


def assert_same_state(model, before, x, ref):
    after = state(model)
    assert after["tensors"].keys() == before["tensors"].keys()
    for k, (v, dtype, stride) in before["tensors"].items():
        v2, dtype2, stride2 = after["tensors"][k]
        assert dtype2 == dtype and stride2 == stride, k
        assert torch.equal(v2, v), k
    assert after["hooks"] == before["hooks"]
    assert after["attrs"] == before["attrs"]  # no leftover instance `forward` etc.
    assert after["compiled"] == before["compiled"]
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref, rtol=0, atol=0)


# ---- hardware gate ------------------------------------------------------------------------

BF16_RECIPE = {"name": "needs_bf16", "requires": {"native_bf16": True}, "precision": {}}


def test_missing_native_bf16_warns(monkeypatch):
    hw = fake_hardware(monkeypatch, bf16=False)
    model, x = make()
    report = fastpipes.accelerate(model, BF16_RECIPE)
    assert report.warnings == [f"requires: {hw.low_precision_note('bf16')}"]
    assert report.applied == ["precision"]  # a warning, not a refusal


def test_missing_native_bf16_with_strict_raises_and_touches_nothing(monkeypatch):
    fake_hardware(monkeypatch, bf16=False)
    model, x = make()
    with torch.no_grad():
        ref = model(x)
    before = state(model)
    with pytest.raises(HardwareError, match="(?s)needs_bf16.*bf16 matmul is NOT native"):
        fastpipes.accelerate(model, BF16_RECIPE, strict=True)
    assert_same_state(model, before, x, ref)


def test_native_bf16_with_strict_applies(monkeypatch):
    fake_hardware(monkeypatch, bf16=True)
    report = fastpipes.accelerate(make()[0], BF16_RECIPE, strict=True)
    assert report.applied == ["precision"] and report.warnings == []


# ---- all-or-nothing -------------------------------------------------------------------------

def _failing_compile(ctx, cfg):
    """Stands in for compile: changes more state, then fails half-way."""
    ctx.pipe._compiled_call_impl = lambda *a, **k: None
    ctx.pipe.head.register_forward_hook(lambda *a: None)
    ctx.pipe.head.forward = lambda x: x
    raise RuntimeError("boom half-way")


def test_a_failing_pass_restores_everything(monkeypatch):
    spec = PASSES.get("compile")
    monkeypatch.setitem(PASSES._items, "compile", dataclasses.replace(spec, apply=_failing_compile))
    model, x = make(1)
    model.conv.register_forward_hook(lambda m, a, out: None)  # the user's own hook survives
    with torch.no_grad():
        ref = model(x)
    before = state(model)
    recipe = {"precision": {"mode": "cast", "keep_fp32": ["norm"]}, "memory_format": {},
              "compile": {}}
    with pytest.raises(PassError, match="pass 'compile' failed: RuntimeError: boom half-way"):
        fastpipes.accelerate(model, recipe)
    assert_same_state(model, before, x, ref)


def test_the_same_recipe_really_changes_all_that_state(monkeypatch):
    # guards the test above against checking state no pass touches
    monkeypatch.setitem(PASSES._items, "compile",
                        PassSpec("compile", PASSES.get("compile").config, lambda ctx, cfg: None, ""))
    model, _ = make(1)
    fastpipes.accelerate(model, {"precision": {"mode": "cast", "keep_fp32": ["norm"]},
                                 "memory_format": {}, "compile": {}})
    assert model.conv.weight.dtype == torch.bfloat16 and model.norm.weight.dtype == torch.float32
    assert model.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not model.conv.weight.is_contiguous()
    assert "forward" in model.__dict__ and "forward" in model.norm.__dict__
    assert len(model._forward_pre_hooks) == 1


def test_real_compile_is_undone_when_a_later_failure_restores(monkeypatch):
    # the real compile pass installs _compiled_call_impl; a failure after it must undo it
    real = PASSES.get("compile").apply

    def compile_then_fail(ctx, cfg):
        real(ctx, cfg)
        assert ctx.pipe._compiled_call_impl is not None
        raise RuntimeError("after compile")

    monkeypatch.setitem(PASSES._items, "compile",
                        dataclasses.replace(PASSES.get("compile"), apply=compile_then_fail))
    model, x = make(2)
    with torch.no_grad():
        ref = model(x)
    before = state(model)
    with pytest.raises(PassError):
        fastpipes.accelerate(model, {"compile": {"backend": "eager"}})
    assert_same_state(model, before, x, ref)


# ---- typed errors -------------------------------------------------------------------------

def test_unsupported_object():
    with pytest.raises(UnsupportedPipelineError, match="does not know how to accelerate a builtins.object"):
        fastpipes.accelerate(object(), {"precision": {}})


def test_family_mismatch():
    model, _ = make()
    with pytest.raises(FastpipesError, match="is for sam pipelines, but this is a generic pipeline"):
        fastpipes.accelerate(model, {"family": "sam", "precision": {}})
    assert "forward" not in model.__dict__


def test_conflict_compile_ipex_backend_without_ipex_pass():
    model, _ = make()
    with pytest.raises(PreflightError, match="compile.backend=ipex need the ipex pass") as e:
        fastpipes.accelerate(model, {"compile": {"backend": "ipex"}})
    if fastpipes.hardware.import_ipex()[0] is None:  # both problems, in one error
        assert "backend 'ipex' is unavailable" in str(e.value) and len(e.value.problems) == 2
    assert model._compiled_call_impl is None


def test_every_preflight_problem_is_reported_at_once_before_anything_changes():
    model, x = make()
    with torch.no_grad():
        ref = model(x)
    before = state(model)
    with pytest.raises(PreflightError) as e:  # components this model lacks: found in preflight
        fastpipes.accelerate(model, {"precision": {"components": ["unet"]},
                                     "memory_format": {"components": ["vae"]},
                                     "attention": {"backend": "ipex"}})
    keys = {p.key for p in e.value.problems}
    assert {"precision.components", "memory_format.components"} <= keys
    assert_same_state(model, before, x, ref)
    # a recipe that names its family has its components checked earlier, while it validates
    # (issue 22): both problems at once, and still nothing changed
    with pytest.raises(RecipeError) as e:
        fastpipes.accelerate(model, {"family": "sam", "precision": {"components": ["unet"]},
                                     "memory_format": {"components": ["vae"]}})
    assert "'unet'" in str(e.value) and "'vae'" in str(e.value) and "2 problems" in str(e.value)
    assert_same_state(model, before, x, ref)


def test_a_second_accelerate_that_would_stack_casts_is_refused():
    model, x = make()
    fastpipes.accelerate(model, {"precision": {"mode": "cast", "dtype": "float16"}})
    with torch.no_grad():
        ref = model(x)
    before = state(model)
    with pytest.raises(ConflictError, match="already accelerated with custom: precision fp16"):
        fastpipes.accelerate(model, {"precision": {"mode": "cast", "dtype": "bfloat16"}})
    assert_same_state(model, before, x, ref)
    # a recipe that does not change numerics (layout) still applies on top
    assert fastpipes.accelerate(model, {"memory_format": {}}).applied == ["memory_format"]


def test_ctrl_c_during_a_pass_restores_everything(monkeypatch):
    def interrupted(ctx, cfg):
        ctx.pipe.conv.weight.data = ctx.pipe.conv.weight.data.to(torch.bfloat16)
        raise KeyboardInterrupt

    monkeypatch.setitem(PASSES._items, "compile",
                        dataclasses.replace(PASSES.get("compile"), apply=interrupted))
    model, x = make(4)
    with torch.no_grad():
        ref = model(x)
    before = state(model)
    with pytest.raises(KeyboardInterrupt):
        fastpipes.accelerate(model, {"memory_format": {}, "compile": {}})
    assert_same_state(model, before, x, ref)


def test_unknown_component_is_a_recipe_error_listing_components():
    with pytest.raises(fastpipes.RecipeError, match="no component 'unet'.*allowed: model"):
        fastpipes.accelerate(make()[0], {"precision": {"components": ["unet"]}})


# ---- the generic recipes ------------------------------------------------------------------

def test_generic_fp32_fast_applies_layout_and_lazy_compile():
    model, x = make(3)
    report = fastpipes.accelerate(model, "generic_fp32_fast")
    assert report.applied == ["memory_format", "compile"]
    assert model.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert model._compiled_call_impl is not None  # compiled lazily: not called here


def test_generic_bf16_declares_native_bf16(monkeypatch):
    fake_hardware(monkeypatch, bf16=False)
    recipe = fastpipes.load_recipe("generic_bf16")
    assert recipe.requires.native_bf16 is True
    assert list(recipe.sections) == ["precision", "compile"]
    with pytest.raises(HardwareError):
        fastpipes.accelerate(make()[0], recipe, strict=True)


def test_one_override_string_is_accepted_by_accelerate():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
    report = fastpipes.accelerate(model, {"memory_format": {}},
                                  overrides="memory_format.convert_inputs=false")
    assert report.applied == ["memory_format"]
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)


# ---- low_memory: the originals wait on disk -------------------------------------------------

def test_low_memory_cast_keeps_the_originals_on_disk_and_still_restores(monkeypatch):
    """The FP32 originals of a BF16 cast leave memory (spilled), and a failure after the cast
    reads them back: same values, dtypes and strides (channels-last included)."""
    spec = PASSES.get("compile")
    monkeypatch.setitem(PASSES._items, "compile", dataclasses.replace(spec, apply=_failing_compile))
    model, x = make(5)
    model.conv.weight.data = model.conv.weight.data.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ref = model(x)
    before = state(model)
    spilled = []
    real_spill = fastpipes.snapshot.Snapshot.spill

    def spy(self, t):
        moved = real_spill(self, t)
        spilled.append(moved)
        return moved

    monkeypatch.setattr(fastpipes.snapshot.Snapshot, "spill", spy)
    with pytest.raises(PassError):
        fastpipes.accelerate(model, {"low_memory": True, "precision": {"mode": "cast"},
                                     "compile": {}})
    fp32_bytes = sum(t.numel() * 4 for t in model.state_dict().values() if t.is_floating_point())
    assert sum(spilled) == fp32_bytes  # every cast original went to disk
    assert_same_state(model, before, x, ref)


def test_low_memory_cast_applies_and_says_how_much_it_moved():
    model, x = make(6)
    report = fastpipes.accelerate(model, {"low_memory": True, "precision": {"mode": "cast"}})
    assert report.extra["spilled_bytes"] > 0
    assert model.conv.weight.dtype == torch.bfloat16
    with torch.no_grad():
        assert model(x).dtype == torch.float32  # outputs cast back to the caller's dtype
