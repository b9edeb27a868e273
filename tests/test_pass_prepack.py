"""prepack pass: Linear layers on oneDNN-packed BF16 weights give F.linear's BF16 result,
follow in-place weight changes, survive pickling, run packed inside a frozen compiled graph
whose FX-graph cache still hits, and are refused cleanly where oneDNN has no BF16."""
from __future__ import annotations

import copy
import json
import os
import pickle
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import fastpipes
from fastpipes.errors import FastpipesError
from fastpipes.kernels import packed_linear
from fastpipes.kernels.packed_linear import STATS, PackedLinear, why_unavailable

pytestmark = pytest.mark.skipif(why_unavailable() is not None,
                                reason=f"prepack unavailable: {why_unavailable()}")


def bf16_linear(x, layer):
    return F.linear(x.bfloat16(), layer.weight.bfloat16(), layer.bias.bfloat16())


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 96), nn.GELU(), nn.Linear(96, 32)).eval()


def test_matches_bf16_linear_and_keeps_the_callers_dtype():
    torch.manual_seed(0)
    ref = nn.Linear(64, 48)
    layer = PackedLinear(ref)
    x = torch.randn(2, 5, 64)
    with torch.no_grad():
        out = layer(x)
        want = bf16_linear(x, ref)
        assert out.dtype == torch.float32  # no autocast: the input's dtype, as nn.Linear
        assert (out - want.float()).abs().max().item() <= 1e-2 * want.abs().max().item()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert layer(x).dtype == torch.bfloat16  # as autocast's own linear
    assert set(layer.state_dict()) == {"weight", "bias"}  # checkpoints load unchanged


def test_follows_weights_changed_in_place():
    a, b = nn.Linear(32, 16), nn.Linear(32, 16)
    layer = PackedLinear(a)
    x = torch.randn(3, 32)
    with torch.no_grad():
        before = layer(x)
        layer.load_state_dict(b.state_dict())  # copies into the same parameters
        after = layer(x)
        assert (after - bf16_linear(x, b).float()).abs().max().item() <= 2e-2
        assert (after - before).abs().max().item() > 0.1


def test_a_weight_no_layer_owns_is_computed_unpacked():
    ref = nn.Linear(32, 16)
    x = torch.randn(3, 32)
    n = STATS["unowned"]
    with torch.no_grad():
        out = torch.ops.fastpipes.linear_packed(x, ref.weight, ref.bias)
    assert STATS["unowned"] == n + 1
    assert torch.equal(out, bf16_linear(x, ref))


def test_a_stale_owner_entry_is_not_used_for_another_tensor_at_its_address():
    import weakref

    layer = PackedLinear(nn.Linear(32, 16, bias=False))
    other = torch.randn(16, 32)  # stands for a tensor allocated where layer's weight was
    packed_linear._OWNERS[other.data_ptr()] = weakref.ref(layer)  # the stale entry
    x = torch.randn(3, 32)
    n = STATS["unowned"]
    try:
        with torch.no_grad():
            out = torch.ops.fastpipes.linear_packed(x, other, None)
    finally:
        del packed_linear._OWNERS[other.data_ptr()]
    assert STATS["unowned"] == n + 1  # not layer's packed weight
    assert torch.equal(out, F.linear(x.bfloat16(), other.bfloat16()))


def test_owner_is_forgotten_with_its_layer():
    layer = PackedLinear(nn.Linear(8, 8))
    ptr = layer.weight.data_ptr()
    assert packed_linear._OWNERS[ptr]() is layer
    del layer
    assert ptr not in packed_linear._OWNERS


def test_pickle_and_deepcopy_repack():
    layer = PackedLinear(nn.Linear(16, 8))
    x = torch.randn(2, 16)
    with torch.no_grad():
        want = layer(x)
        for clone in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
            n = STATS["packed"]
            assert torch.equal(clone(x), want)
            assert STATS["packed"] == n + 1  # the clone's own packed copy, not the fallback


CHILD = """
import json, torch, torch.nn as nn, fastpipes
from torch._dynamo.utils import counters
from fastpipes.kernels.packed_linear import STATS
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(64, 96), nn.GELU(), nn.Linear(96, 32)).eval()
fastpipes.accelerate(model, {"precision": {"mode": "autocast", "dtype": "bfloat16"},
                             "prepack": {"min_size": 0},
                             "compile": {"options": {"freezing": True,
                                                     "cpp.weight_prepack": False}}})
with torch.no_grad():
    out = model(torch.randn(4, 64, generator=torch.Generator().manual_seed(1)))
print(json.dumps({"hit": counters["inductor"]["fxgraph_cache_hit"],
                  "miss": counters["inductor"]["fxgraph_cache_miss"], **STATS,
                  "sum": out.float().sum().item()}))
"""


def test_frozen_compiled_graph_runs_packed_and_a_new_process_reads_it_from_the_cache(tmp_path):
    # each run is a new process, as a user's next start: Inductor's freezing set-up is
    # per process, so this is not checked inside the test process
    env = {**os.environ, "FASTPIPES_CACHE_DIR": str(tmp_path)}
    runs = [json.loads(subprocess.run([sys.executable, "-c", CHILD], env=env, check=True,
                                      capture_output=True, text=True).stdout.splitlines()[-1])
            for _ in range(2)]
    first, second = runs
    assert first["packed"] == 2 and first["unowned"] == 0  # packed inside the frozen graph
    assert first["miss"] == 1 and first["hit"] == 0
    # cpp.weight_prepack's MKLDNN constants would make the graph bypass the cache
    assert second["hit"] == 1 and second["miss"] == 0 and second["packed"] == 2
    assert second["sum"] == first["sum"]


def test_frozen_compiled_graph_matches_the_fp32_model():
    recipe = {"precision": {"mode": "autocast", "dtype": "bfloat16"}, "prepack": {"min_size": 0},
              "compile": {"options": {"freezing": True, "cpp.weight_prepack": False}}}
    ref, model = mlp(), mlp()
    x = torch.randn(4, 64)
    report = fastpipes.accelerate(model, recipe)
    assert report.precision_class == "bf16"
    assert any("2 Linear -> fastpipes::linear_packed" in c for c in report.record("prepack").changes)
    with torch.no_grad():
        want, got = ref(x), model(x)
    assert ((got.float() - want).norm() / want.norm()).item() <= 2e-2


def test_small_layers_stay_nn_linear():
    model = nn.Sequential(nn.Linear(256, 256), nn.GELU(), nn.Linear(256, 8))  # 65536 and 2048
    report = fastpipes.accelerate(model, {"prepack": {}})
    assert [type(m) for m in model] == [PackedLinear, nn.GELU, nn.Linear]
    assert report.record("prepack").changes == [
        "model: 1 Linear -> fastpipes::linear_packed (BF16 weights packed by oneDNN, 0.1 MB); "
        "1 with fewer than min_size=65536 weights left as nn.Linear"]


def test_refused_where_unavailable_leaves_the_model_alone(monkeypatch):
    monkeypatch.setattr("fastpipes.passes.prepack.why_unavailable",
                        lambda: "oneDNN has no BF16 kernels on this CPU")
    model = mlp()
    before = [type(m) for m in model.modules()]
    with pytest.raises(FastpipesError, match="prepack is unavailable: oneDNN has no BF16"):
        fastpipes.accelerate(model, {"prepack": {}})
    assert [type(m) for m in model.modules()] == before


def test_skipped_visibly_without_linear_layers():
    report = fastpipes.accelerate(nn.Sequential(nn.Conv2d(3, 4, 3)), {"prepack": {}})
    assert report.record("prepack").status.value == "skipped"
    small = fastpipes.accelerate(nn.Sequential(nn.Linear(16, 8)), {"prepack": {}})
    assert small.record("prepack").status.value == "skipped"
    assert "at least min_size=65536 weights" in small.record("prepack").reason


@pytest.mark.parametrize("section", [{"prepack": {}}, {"attention": {"backend": "native"}}])
def test_aot_inductor_with_python_custom_ops_is_a_conflict(section):
    from fastpipes.passes.order import conflicts
    from fastpipes.recipe import load_recipe

    recipe = load_recipe({**section, "compile": {"backend": "aot_inductor"}})
    (problem,) = conflicts(recipe)
    assert "which an AOTInductor package cannot call" in str(problem)
    assert not conflicts(load_recipe({**section, "compile": {"backend": "inductor"}}))
