"""The quantize pass on small seeded modules: what it replaces, outputs, save/load, restore."""
import pytest
import torch
import torch.nn as nn

import fastpipes
from fastpipes.errors import PassError, RecipeError
from fastpipes.kernels.woq import Int4WeightOnlyLinear, Int8DynamicLinear, Int8WeightOnlyLinear
from fastpipes.passes.quantize import load_quantized, save_quantized


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.up = nn.Linear(128, 256)
        self.small = nn.Linear(256, 16)
        self.down = nn.Linear(16, 128)
        self.lm_head = nn.Linear(128, 512, bias=False)

    def forward(self, x):
        return self.lm_head(self.down(torch.relu(self.small(torch.relu(self.up(x))))))


def test_int8_replaces_all_linears_close_to_fp32():
    net, x = Net(), torch.randn(4, 128)
    ref = net(x).detach()
    report = fastpipes.accelerate(net, {"quantize": {"dtype": "int8"}})
    assert all(isinstance(m, Int8WeightOnlyLinear) for m in (net.up, net.small, net.down, net.lm_head))
    info = report.extra["quantize"]["model"]
    assert info["layers"] == 4 and info["bytes_after"] < info["bytes_before"] / 2
    out = net(x).detach()
    assert ((out - ref).norm() / ref.norm()) < 0.03


def test_targets_exclude_min_features_lm_head():
    net = Net()
    fastpipes.accelerate(net, {"quantize": {"dtype": "int4", "group_size": 32, "min_features": 32,
                                            "exclude": ["down"], "include_lm_head": False}})
    assert isinstance(net.up, Int4WeightOnlyLinear)
    assert type(net.small) is nn.Linear  # 16 outputs < min_features
    assert type(net.down) is nn.Linear and type(net.lm_head) is nn.Linear
    net2 = Net()
    fastpipes.accelerate(net2, {"quantize": {"targets": ["lm_*"]}})
    assert isinstance(net2.lm_head, Int8WeightOnlyLinear) and type(net2.up) is nn.Linear


def test_bad_group_size_is_a_recipe_error():
    with pytest.raises(RecipeError, match="group_size"):
        fastpipes.accelerate(Net(), {"quantize": {"dtype": "int4", "group_size": 48}})


def test_dynamic_mode_quantizes_weights_and_activations():
    net, x = Net(), torch.randn(64, 128)
    ref = net(x).detach()
    report = fastpipes.accelerate(net, {"quantize": {"mode": "dynamic", "exclude": ["small"]}})
    assert all(isinstance(m, Int8DynamicLinear) for m in (net.up, net.down, net.lm_head))
    assert type(net.small) is nn.Linear
    assert "per-row int8 activations (dynamic W8A8)" in " ".join(report.passes[0].changes)
    assert report.extra["quantize"]["model"]["dtype"] == "int8_dynamic"
    out = net(x).detach()
    assert 0 < ((out - ref).norm() / ref.norm()) < 0.05


@pytest.mark.parametrize("bad, field", [({"dtype": "int4"}, "mode"),
                                        ({"act_dtype": "bfloat16"}, "act_dtype")])
def test_dynamic_mode_bad_combinations_are_recipe_errors(bad, field):
    net = Net()
    with pytest.raises(RecipeError, match=field):
        fastpipes.accelerate(net, {"quantize": {"mode": "dynamic", **bad}})
    assert type(net.up) is nn.Linear


@pytest.mark.parametrize("dtype, mode", [("int8", "weight_only"), ("int4", "weight_only"),
                                         ("int8", "dynamic")])
def test_cache_dir_saves_then_loads(tmp_path, dtype, mode):
    x = torch.randn(2, 128)
    cfg = {"quantize": {"dtype": dtype, "mode": mode, "group_size": 32,
                        "cache_dir": str(tmp_path)}}
    a = Net()
    r1 = fastpipes.accelerate(a, cfg)
    assert "saved to" in " ".join(r1.passes[0].changes)
    b = Net()
    r2 = fastpipes.accelerate(b, cfg)
    assert "loaded from" in " ".join(r2.passes[0].changes)
    assert type(b.up) is type(a.up) and type(a.up) is not nn.Linear
    assert torch.equal(a(x), b(x))
    # a model with other weights gets another cache file, not the stale one
    c = Net()
    with torch.no_grad():
        c.up.weight.mul_(2)  # test-side edit of a fresh model, before accelerate
    r3 = fastpipes.accelerate(c, cfg)
    assert "saved to" in " ".join(r3.passes[0].changes)


def test_save_load_api_roundtrip(tmp_path):
    a = Net()
    fastpipes.accelerate(a, {"quantize": {"dtype": "int8"}})
    path = tmp_path / "q.safetensors"
    assert save_quantized(a, path) == 4
    b = Net()
    names = load_quantized(b, path)
    assert sorted(names) == ["down", "lm_head", "small", "up"]
    x = torch.randn(2, 128)
    assert torch.equal(a(x), b(x))


def test_failure_after_quantize_restores_modules():
    net, x = Net(), torch.randn(2, 128)
    ref = net(x).detach()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    # kv_cache on a plain module is skipped; a missing component is a user error after quantize
    with pytest.raises((RecipeError, PassError)):
        fastpipes.accelerate(net, {"quantize": {}, "kv_cache": {"components": ["nope"]}})
    assert type(net.up) is nn.Linear and type(net.lm_head) is nn.Linear
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert torch.equal(net(x), ref)


def test_dynamic_mode_under_inductor_matches_the_eager_quantized_layers():
    # the recipes always compile this mode (Inductor fuses the per-row quantization); one
    # small Inductor compile checks that the fused graph computes the same int8 arithmetic
    torch.manual_seed(0)
    eager = nn.Sequential(nn.Linear(128, 256), nn.GELU(), nn.Linear(256, 128))
    x = torch.randn(64, 128)
    compiled = nn.Sequential(nn.Linear(128, 256), nn.GELU(), nn.Linear(256, 128))
    compiled.load_state_dict(eager.state_dict())
    fastpipes.accelerate(eager, {"quantize": {"mode": "dynamic"}})
    report = fastpipes.accelerate(compiled, {"quantize": {"mode": "dynamic"},
                                             "compile": {"cache": False}})
    with torch.no_grad():
        ref, out = eager(x), compiled(x)
    assert report.applied == ["quantize", "compile"] and report.warnings == []
    assert isinstance(compiled[0], Int8DynamicLinear)
    assert ((out - ref).norm() / ref.norm()) < 1e-3
    torch._dynamo.reset()
