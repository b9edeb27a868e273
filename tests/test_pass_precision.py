"""precision pass: autocast / cast, keep_fp32, boundary dtypes, hardware note."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn as nn

import fastpipes
import fastpipes.apply
from fastpipes.hardware import detect
from fastpipes.passes.precision import map_tensors

BF16_TOL = dict(rtol=2e-2, atol=2e-2)  # bf16 has an 8-bit mantissa: ~0.4% per op


class Block(nn.Module):
    """Tiny transformer-ish MLP: Linear -> LayerNorm -> GELU -> Linear."""

    def __init__(self, d=32):
        super().__init__()
        self.fc1 = nn.Linear(d, 2 * d)
        self.norm = nn.LayerNorm(2 * d)
        self.fc2 = nn.Linear(2 * d, d)

    def forward(self, x):  # x: [B, d]
        return self.fc2(torch.nn.functional.gelu(self.norm(self.fc1(x))))


def make(seed=0):
    torch.manual_seed(seed)
    return Block().eval(), torch.randn(4, 32)


def fake_hardware(monkeypatch, bf16: bool, fp16: bool):
    hw = dataclasses.replace(detect(), bf16_native=bf16, fp16_native=fp16, cuda_devices=[])
    monkeypatch.setattr(fastpipes.apply, "detect", lambda *a, **k: hw)
    return hw


def dtypes_seen(model, x):
    """Output dtype of each named submodule during one call."""
    seen, hooks = {}, []
    for name, m in model.named_children():
        hooks.append(m.register_forward_hook(lambda mod, a, out, n=name: seen.__setitem__(n, out.dtype)))
    with torch.no_grad():
        y = model(x)
    for h in hooks:
        h.remove()
    return y, seen


def test_autocast_runs_linears_in_bf16_norm_in_fp32_and_returns_fp32():
    model, x = make()
    with torch.no_grad():
        ref = model(x)
    report = fastpipes.accelerate(model, {"precision": {"keep_fp32": ["*norm*"]}})
    assert "forward" in model.__dict__ and "forward" in model.norm.__dict__
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast: weights stay
    y, seen = dtypes_seen(model, x)
    assert seen == {"fc1": torch.bfloat16, "norm": torch.float32, "fc2": torch.bfloat16}
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, ref, **BF16_TOL)
    assert report.applied == ["precision"]
    assert "1 modules (2 parameters) kept float32 (*norm*)" in report.passes[0].changes[0]


def test_cast_casts_weights_except_kept_and_casts_at_the_boundary():
    model, x = make(1)
    with torch.no_grad():
        ref = model(x)
    report = fastpipes.accelerate(model, {"precision": {"mode": "cast", "keep_fp32": ["norm"]}})
    assert model.fc1.weight.dtype == model.fc2.bias.dtype == torch.bfloat16
    assert model.norm.weight.dtype == torch.float32
    y, seen = dtypes_seen(model, x)
    assert seen == {"fc1": torch.bfloat16, "norm": torch.bfloat16, "fc2": torch.bfloat16}
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, ref, **BF16_TOL)
    assert "4 parameters and 0 buffers cast to bfloat16" in report.passes[0].changes[0]
    # a float64 caller gets float64 back
    assert model(x.double()).dtype == torch.float64


def test_cast_fp16_on_tiny_shapes():
    model, x = make(2)
    with torch.no_grad():
        ref = model(x)
    fastpipes.accelerate(model, {"precision": {"mode": "cast", "dtype": "float16"}})
    assert model.norm.weight.dtype == torch.float16
    with torch.no_grad():
        y = model(x)
    torch.testing.assert_close(y, ref, rtol=5e-3, atol=5e-3)  # fp16: 11-bit mantissa


def test_outputs_of_every_structure_are_cast_back():
    @dataclasses.dataclass
    class Out:
        a: torch.Tensor
        n: int = 3

    class Multi(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 8)

        def forward(self, x, ids):
            y = self.fc(x)
            return y, {"y": y, "ids": ids, "list": [y, None]}, Out(y)

    torch.manual_seed(0)
    model, x, ids = Multi(), torch.randn(2, 8), torch.arange(4)
    fastpipes.accelerate(model, {"precision": {"mode": "cast"}})
    t, d, o = model(x, ids)
    assert t.dtype == d["y"].dtype == d["list"][0].dtype == o.a.dtype == torch.float32
    assert d["ids"].dtype == torch.int64 and d["list"][1] is None and o.n == 3


def test_map_tensors_keeps_modeloutput_type():
    transformers = pytest.importorskip("transformers")
    out = transformers.modeling_outputs.BaseModelOutput(last_hidden_state=torch.ones(2, dtype=torch.bfloat16))
    back = map_tensors(out, lambda t: t.float())
    assert type(back) is type(out) and back.last_hidden_state.dtype == torch.float32
    assert back["last_hidden_state"].dtype == torch.float32


def test_keep_fp32_whole_component_skips_and_unmatched_pattern_warns():
    model, _ = make()
    report = fastpipes.accelerate(model, {"precision": {"keep_fp32": ["model"]}})
    assert report.skipped["precision"].startswith("every selected component is kept")
    assert "forward" not in model.__dict__
    report = fastpipes.accelerate(make()[0], {"precision": {"keep_fp32": ["*attn*"]}})
    assert any("'*attn*' matched no module" in w for w in report.warnings)


def test_warns_when_dtype_is_not_native_and_recipe_forgot_requires(monkeypatch):
    hw = fake_hardware(monkeypatch, bf16=False, fp16=False)
    report = fastpipes.accelerate(make()[0], {"precision": {"dtype": "bfloat16"}})
    assert report.warnings == [f"precision: {hw.low_precision_note('bf16')}"]
    assert "NOT native" in report.warnings[0]
    # the recipe declared it: accelerate() warns once (requires), the pass does not repeat it
    report = fastpipes.accelerate(make()[0], {"requires": {"native_bf16": True}, "precision": {}})
    assert len(report.warnings) == 1 and report.warnings[0].startswith("requires: ")


def test_no_warning_when_native(monkeypatch):
    fake_hardware(monkeypatch, bf16=True, fp16=False)
    report = fastpipes.accelerate(make()[0], {"precision": {}})
    assert report.warnings == []


@pytest.mark.parametrize("quant", [{"dtype": "int8"}, {"dtype": "int4", "group_size": 32},
                                   {"mode": "dynamic"}])
def test_a_half_cast_leaves_quantized_layers_their_own_dtypes(quant):
    """fp16 cast + int8 weight-only (BF16 activations in the kernel) used to apply, then fail
    at the first forward (the cast turned the kernel's BF16 scales into FP16)."""
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64))
    x = torch.randn(2, 64)
    with torch.no_grad():
        ref = m(x)
    report = fastpipes.accelerate(m, {"quantize": quant,
                                      "precision": {"mode": "cast", "dtype": "float16"}})
    assert report.applied == ["quantize", "precision"]
    with torch.no_grad():
        out = m(x)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert ((out - ref).norm() / ref.norm()).item() < 0.1
