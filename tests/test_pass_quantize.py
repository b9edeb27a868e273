"""The quantize pass on small seeded modules: what it replaces, outputs, save/load, restore."""
import pytest
import torch
import torch.nn as nn

import fastpipes
from fastpipes.errors import InputError, PassError, RecipeError
from fastpipes.kernels.woq import Int4WeightOnlyLinear, Int8DynamicLinear, Int8WeightOnlyLinear
from fastpipes.fingerprint import content_hash
from fastpipes.passes.quantize import (QuantizeConfig, fingerprint,
                                      load_quantized, save_quantized, select_linears)


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


@pytest.mark.parametrize("path", ["auto", "kernel"])
def test_prompt_path_is_set_on_the_layers_and_reported(path):
    """auto: prompts of a few rows and more run a dense GEMM (the layer's prompt_rows, decided
    when it was built); kernel: every row count keeps the packed kernel. Same numbers."""
    net, x = Net(), torch.randn(300, 128)  # more rows than int8's prompt_rows (256)
    report = fastpipes.accelerate(net, {"quantize": {"dtype": "int8", "prompt_path": path}})
    line = " ".join(report.passes[0].changes)
    if path == "kernel":
        assert net.up.prompt_rows == 0 and "packed kernel at every row count" in line
    else:
        assert 2 <= net.up.prompt_rows <= len(x) and "prompts: dense" in line
    ref = Net()
    with torch.no_grad():
        assert ((net(x) - ref(x)).norm() / ref(x).norm()) < 0.03


@pytest.mark.parametrize("bad, field", [({"dtype": "int4"}, "mode"),
                                        ({"act_dtype": "bfloat16"}, "act_dtype"),
                                        ({"prompt_path": "kernel"}, "prompt_path")])
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


# ---- the quantized-weight cache across processes, and files it must not trust ------------

_CACHE_CHILD = """
import sys, torch, fastpipes
torch.manual_seed(0)
sizes = [(64, 64), (48, 80), (1000, 32), (256, 512)]
out = {}
for dtype, mode in [("int8", "weight_only"), ("int8", "dynamic"), ("int4", "weight_only")]:
    torch.manual_seed(1)
    net = torch.nn.Sequential(*[torch.nn.Linear(k, n) for k, n in sizes])
    cfg = {"quantize": {"dtype": dtype, "mode": mode, "group_size": 32, "cache_dir": sys.argv[1]}}
    report = fastpipes.accelerate(net, cfg)
    how = " ".join(report.passes[0].changes)
    with torch.no_grad():
        out[f"{dtype}-{mode}"] = [layer(torch.randn(5, k, generator=torch.Generator().manual_seed(k)))
                                  for (k, n), layer in zip(sizes, net)]
    print(dtype, mode, "loaded" if "loaded from" in how else "saved" if "saved to" in how else how,
          flush=True)
torch.save(out, sys.argv[2])
"""


def test_cache_loads_in_a_second_process_at_several_layer_sizes(tmp_path):
    # the file's tensors sit at offsets of its memory map that are not 64-byte aligned; a
    # second process used to hand them straight to the int8 kernel and died of SIGSEGV
    import subprocess
    import sys

    runs = []
    for i in range(2):
        run = subprocess.run([sys.executable, "-c", _CACHE_CHILD, str(tmp_path / "q"),
                              str(tmp_path / f"out{i}.pt")], capture_output=True, text=True,
                             timeout=300)
        assert run.returncode == 0, (i, run.returncode, run.stdout, run.stderr[-2000:])
        runs.append(run.stdout.split("\n"))
    assert all(line.endswith("saved") for line in runs[0] if line), runs[0]
    assert all(line.endswith("loaded") for line in runs[1] if line), runs[1]
    first, second = (torch.load(tmp_path / f"out{i}.pt", weights_only=True) for i in range(2))
    for key in first:
        assert all(torch.equal(a, b) for a, b in zip(first[key], second[key])), key


_LOAD_CHILD = """
import sys, torch
from fastpipes.passes.quantize import load_quantized
net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64))
load_quantized(net, sys.argv[1])
with torch.no_grad():
    torch.save(net(torch.load(sys.argv[2], weights_only=True)), sys.argv[3])
"""


def test_int8_weights_at_an_unaligned_file_offset_load_safely(tmp_path):
    # the case made certain: a file whose int8 weights sit 8 bytes off a 16-byte
    # boundary in the memory map (the kernel loads 16 weights at a time with aligned loads)
    import subprocess
    import sys

    from safetensors import safe_open
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64))
    fastpipes.accelerate(net, {"quantize": {"dtype": "int8"}})
    path = tmp_path / "q.safetensors"
    save_quantized(net, path)
    with safe_open(str(path), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k).clone() for k in f.keys()}
    for n in range(16):  # a longer header moves the data by multiples of 8 bytes
        save_file(tensors, str(path), metadata={**meta, "pad": "x" * n})
        with safe_open(str(path), framework="pt") as f:
            if f.get_tensor("0.weight").data_ptr() % 16:
                break
    else:
        pytest.skip("safetensors returned aligned copies: nothing to test")
    x = torch.randn(5, 64)  # >= 4 rows: the kernel's 4-row blocks
    torch.save(x, tmp_path / "x.pt")
    run = subprocess.run([sys.executable, "-c", _LOAD_CHILD, str(path), str(tmp_path / "x.pt"),
                          str(tmp_path / "y.pt")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, (run.returncode, run.stderr[-2000:])
    with torch.no_grad():
        assert torch.equal(torch.load(tmp_path / "y.pt", weights_only=True), net(x))


def _cache_file(tmp_path):
    (f,) = list(tmp_path.glob("model-*.safetensors"))
    return f


def _doubled():
    net = Net()
    with torch.no_grad():
        net.up.weight.mul_(2)  # another checkpoint of the same shapes
    return net


def test_cache_file_of_other_weights_is_not_loaded(tmp_path):
    # a cache file under this model's name but with another model's weights inside (copied
    # by hand, or a key collision): the fingerprint stored in the file must be checked
    cfg = {"quantize": {"dtype": "int8", "cache_dir": str(tmp_path)}}
    fastpipes.accelerate(Net(), cfg)
    b, fresh = _doubled(), _doubled()
    fastpipes.accelerate(fresh, {"quantize": {"dtype": "int8"}})
    key_b = fingerprint(select_linears(b, QuantizeConfig()), "int8", 128, "bfloat16")
    _cache_file(tmp_path).rename(tmp_path / f"model-int8-{key_b}.safetensors")
    report = fastpipes.accelerate(b, cfg)
    assert any("fingerprint" in w for w in report.warnings), report.warnings
    assert "saved to" in " ".join(report.passes[0].changes)
    x = torch.randn(3, 128)
    assert torch.equal(b(x), fresh(x))  # b's own weights, not the file's
    r2 = fastpipes.accelerate(_doubled(), cfg)  # the rewritten file now serves b's weights
    assert "loaded from" in " ".join(r2.passes[0].changes) and not r2.warnings


def test_truncated_cache_file_is_quantized_again(tmp_path):
    cfg = {"quantize": {"dtype": "int4", "group_size": 32, "cache_dir": str(tmp_path)}}
    fastpipes.accelerate(Net(), cfg)
    f = _cache_file(tmp_path)
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    net, ref = Net(), Net()
    fastpipes.accelerate(ref, {"quantize": {"dtype": "int4", "group_size": 32}})
    report = fastpipes.accelerate(net, cfg)
    assert any("ignored the quantized-weight cache" in w for w in report.warnings)
    x = torch.randn(2, 128)
    assert torch.equal(net(x), ref(x))


def test_load_quantized_checks_every_tensor_before_replacing_anything(tmp_path):
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    a = Net()
    fastpipes.accelerate(a, {"quantize": {"dtype": "int8"}})
    path = tmp_path / "q.safetensors"
    save_quantized(a, path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    tensors["lm_head.weight"] = tensors["lm_head.weight"][:100].clone()  # fewer rows
    # hashed anew: a file whose data is intact but wrong for the model (a writer's bug)
    save_file(tensors, str(path),
              metadata={**meta, "content_sha256": content_hash(tensors, tensors.get)})
    b = Net()
    with pytest.raises(InputError, match=r"lm_head.weight.*needs torch.int8 \(512, 128\)"):
        load_quantized(b, path)
    assert all(type(m) is nn.Linear for m in (b.up, b.small, b.down, b.lm_head))  # untouched
    (tmp_path / "t.safetensors").write_text("not a checkpoint\n")
    with pytest.raises(InputError, match="t.safetensors could not be read"):
        load_quantized(b, tmp_path / "t.safetensors")


# ---- int4: layers the kernel cannot take are listed; K is padded, never left FP32 --------

class Odd(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.up = nn.Linear(64, 176)  # fits
        self.down = nn.Linear(176, 64)  # K = 176: 5.5 groups of 32 -> padded to 192
        self.head = nn.Linear(64, 24)  # N = 24: not a multiple of 16 -> skipped

    def forward(self, x):
        return self.head(self.down(torch.relu(self.up(x))))


def test_int4_skips_what_the_kernel_cannot_take_and_pads_k(tmp_path):
    net, x = Odd(), torch.randn(4, 64)
    ref = net(x).detach()
    cfg = {"quantize": {"dtype": "int4", "group_size": 32, "cache_dir": str(tmp_path)}}
    report = fastpipes.accelerate(net, cfg)
    assert isinstance(net.up, Int4WeightOnlyLinear) and isinstance(net.down, Int4WeightOnlyLinear)
    assert type(net.head) is nn.Linear
    info = report.extra["quantize"]["model"]
    assert info["layers"] == 2 and info["padded"] == {"down": [176, 192]}
    assert list(info["skipped"]) == ["head"] and "multiple of 16" in info["skipped"]["head"]
    line = " ".join(report.passes[0].changes)
    assert line.startswith("model: 2 Linear -> int4") and "down 176->192" in line
    assert any("head (out_features 24" in w for w in report.warnings)
    out = net(x).detach()
    assert ((out - ref).norm() / ref.norm()) < 0.15
    again = Odd()  # padded layers round-trip through the cache file
    r2 = fastpipes.accelerate(again, cfg)
    assert "loaded from" in " ".join(r2.passes[0].changes)
    assert again.down.k_padded == 192 and torch.equal(again(x), net(x))


def test_int4_with_no_layer_the_kernel_takes_is_skipped_with_the_reason():
    net = nn.Sequential(nn.Linear(64, 24))
    report = fastpipes.accelerate(net, {"quantize": {"dtype": "int4", "group_size": 32}})
    assert report.skipped["quantize"].endswith("cannot take the targeted ones (see warnings)")
    assert type(net[0]) is nn.Linear


def test_low_memory_quantize_moves_the_fp32_originals_out_but_not_a_tied_weight():
    pytest.importorskip("transformers")
    from fastpipes.llama.pipeline import build_llama

    model = build_llama("tiny")
    ids = torch.tensor([[5, 17, 99, 3]])
    with torch.no_grad():
        ref = model(ids).logits
    untied = sum(m.weight.numel() * 4 for n, m in model.named_modules()
                 if type(m) is torch.nn.Linear and n != "lm_head")
    report = fastpipes.accelerate(model, {"low_memory": True, "quantize": {"dtype": "int8"}})
    assert report.extra["spilled_bytes"] == untied  # lm_head's weight is the embedding's
    assert model.model.embed_tokens.weight.numel() > 0  # the tied weight was not emptied
    with torch.no_grad():
        out = model(ids).logits
    assert ((out - ref).norm() / ref.norm()).item() < 0.05


def test_low_memory_quantize_still_restores_after_a_later_failure(monkeypatch):
    import dataclasses

    from fastpipes.passes.base import PASSES

    def boom(ctx, cfg):
        raise RuntimeError("after quantize")

    monkeypatch.setitem(PASSES._items, "compile",
                        dataclasses.replace(PASSES.get("compile"), apply=boom))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 32))
    x = torch.randn(3, 64)
    with torch.no_grad():
        ref = model(x)
    with pytest.raises(PassError):
        fastpipes.accelerate(model, {"low_memory": True, "quantize": {"dtype": "int8"},
                                     "compile": {}})
    assert type(model[0]) is torch.nn.Linear and model[0].weight.shape == (64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), ref)  # read back from disk, bit for bit
