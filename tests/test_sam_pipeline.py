"""SAM loading (with and without torchvision), builders, adapter, attention pass, workload."""
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import fastpipes
from fastpipes.bench.workloads import WorkloadSpec, get_workload
from fastpipes.sam.bench import SamWorkload
from fastpipes.errors import BenchmarkError, FastpipesError, InputError
from fastpipes.pipelines.base import find_adapter
from fastpipes.sam.pipeline import SAM_SHAPES, SamShape, build_sam, sam_modeling
from fastpipes.sam.predictor import SamPredictor

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny():
    return build_sam("tiny", seed=0)


def _run(code: str, extra_path: str = "") -> subprocess.CompletedProcess:
    env_path = f"{extra_path}:{ROOT}" if extra_path else str(ROOT)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env={"PYTHONPATH": env_path}, timeout=120)


def test_loads_when_torchvision_is_missing():
    r = _run("""
        import sys; sys.modules["torchvision"] = None  # import torchvision -> ImportError
        from fastpipes.sam.pipeline import build_sam
        sam = build_sam("tiny")
        print(type(sam).__module__, "segment_anything" in sys.modules)
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["segment_anything.modeling.sam", "False"]


def test_loads_when_torchvision_is_broken(tmp_path):
    (tmp_path / "torchvision").mkdir()
    (tmp_path / "torchvision" / "__init__.py").write_text(
        "raise RuntimeError('operator torchvision::nms does not exist')\n")
    r = _run("""
        from fastpipes.sam.pipeline import build_sam
        print(type(build_sam("tiny")).__name__)
    """, extra_path=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "Sam"


def test_configs_match_upstream_builders():
    import importlib
    import types

    m = sam_modeling()  # make sure the package's modeling is importable first
    assert m.Sam is not None
    spec = importlib.util.find_spec("segment_anything")
    saved = sys.modules.get("segment_anything")
    bare = types.ModuleType("segment_anything")
    bare.__path__ = list(spec.submodule_search_locations)
    sys.modules.setdefault("segment_anything", bare)
    try:
        build = importlib.import_module("segment_anything.build_sam")
    finally:
        if saved is None and sys.modules.get("segment_anything") is bare:
            del sys.modules["segment_anything"]
    seen = {}
    orig = build._build_sam
    build._build_sam = lambda **kw: seen.update(kw)
    try:
        for name in ("vit_b", "vit_l", "vit_h"):
            build.sam_model_registry[name]()
            cfg = SAM_SHAPES[name]
            assert (cfg.embed_dim, cfg.depth, cfg.num_heads, list(cfg.global_attn_indexes)) == (
                seen["encoder_embed_dim"], seen["encoder_depth"], seen["encoder_num_heads"],
                list(seen["encoder_global_attn_indexes"]))
            assert (cfg.image_size, cfg.patch_size, cfg.window_size, cfg.prompt_embed_dim) == (
                1024, 16, 14, 256)
    finally:
        build._build_sam = orig


def test_tiny_is_sam_shaped_seeded_and_rel_pos_nonzero(tiny):
    enc = tiny.image_encoder
    windows = [b.window_size for b in enc.blocks]
    assert 0 in windows and any(w > 0 for w in windows)  # windowed and global blocks
    assert all(b.attn.use_rel_pos and b.attn.rel_pos_h.abs().min() > 0 for b in enc.blocks)
    again = build_sam("tiny", seed=0)
    assert all(torch.equal(a, b) for a, b in zip(tiny.state_dict().values(),
                                                 again.state_dict().values()))
    with pytest.raises(InputError, match="allowed: vit_b, vit_l, vit_h, tiny"):
        SamShape.from_name("vit_x")


def test_checkpoint_round_trip_and_errors(tiny, tmp_path):
    path = tmp_path / "tiny.pth"
    torch.save(tiny.state_dict(), path)
    loaded = build_sam("tiny", checkpoint=path, seed=123)
    assert all(torch.equal(a, b) for a, b in zip(tiny.state_dict().values(),
                                                 loaded.state_dict().values()))
    with pytest.raises(InputError, match="not found"):
        build_sam("tiny", checkpoint=tmp_path / "nope.pth")
    torch.save({"bogus": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(InputError, match="does not fit"):
        build_sam("tiny", checkpoint=tmp_path / "bad.pth")


def _fake_upstream(cls_name, module, **attrs):
    cls = type(cls_name, (), {})
    cls.__module__ = module
    obj = cls()
    obj.__dict__.update(attrs)
    return obj


def test_adapter_accepts_sam_predictors_and_generator(tiny):
    up_pred = _fake_upstream("SamPredictor", "segment_anything.predictor", model=tiny)
    up_gen = _fake_upstream("SamAutomaticMaskGenerator",
                            "segment_anything.automatic_mask_generator", predictor=up_pred)
    for obj in (tiny, SamPredictor(tiny), up_pred, up_gen):
        a = find_adapter(obj)
        assert a.name == "sam"
        assert list(a.components()) == ["image_encoder", "prompt_encoder", "mask_decoder"]
        assert a.default_components("compile") == ["image_encoder"]
        (site,) = a.attention_sites()
        assert site.kind == "sam_relpos" and len(site.modules) == len(tiny.image_encoder.blocks)
    assert find_adapter(torch.nn.Linear(2, 2)).name == "generic"


def test_attention_pass_matches_fp32():
    sam = build_sam("tiny", seed=0)
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        ref = sam.image_encoder(x)
    report = fastpipes.accelerate(SamPredictor(sam), {"attention": {"block_size": 16}})
    assert report.adapter == "sam" and report.applied == ["attention"]
    assert "4 rel-pos Attention -> SDPA" in str(report)
    assert all(type(b.attn).__name__ == "SamSdpaAttention" for b in sam.image_encoder.blocks)
    with torch.no_grad():
        got = sam.image_encoder(x)
    assert ((got - ref).norm() / ref.norm()).item() <= 1e-5


def test_ipex_backend_without_ipex_is_a_clear_error_and_restores():
    if fastpipes.hardware.import_ipex()[0] is not None:
        pytest.skip("ipex imports here")
    sam = build_sam("tiny", seed=0)
    with pytest.raises(FastpipesError, match="attention.backend: backend 'ipex' is unavailable: "
                                             "intel-extension-for-pytorch"):
        fastpipes.accelerate(sam, {"attention": {"backend": "ipex"}})
    assert all(type(b.attn).__name__ == "Attention" for b in sam.image_encoder.blocks)


def _views(wl, ref_pipe, pipe, inputs, out=None):
    """(FP32 reference view, this configuration's view) as the benchmark makes them."""
    ref = wl.view(ref_pipe, inputs, wl.run(ref_pipe, inputs))
    return ref, wl.view(pipe, inputs, wl.run(pipe, inputs) if out is None else out, ref)


def test_workload_tiny():
    wl = get_workload(WorkloadSpec("sam", size="tiny", batch_size=2))
    ref_pipe, fast_pipe = wl.build(), wl.build()
    fastpipes.accelerate(fast_pipe, {"attention": {"block_size": 16}})
    inputs = wl.inputs(ref_pipe)
    assert inputs["images"].shape == (2, 3, 128, 128)
    assert wl.run(ref_pipe, inputs).shape == (2, 32, 8, 8)
    ref, view = _views(wl, ref_pipe, fast_pipe, inputs)
    fid = wl.compare(fast_pipe, ref, view, "exact")
    assert fid.ok and fid.metrics["mask_iou_min"] >= 0.99 and fid.precision_class == "exact"
    assert fid.metrics["embedding_rel_err"] <= 1e-5
    # a perturbed encoder is caught
    _, bad = _views(wl, ref_pipe, fast_pipe, inputs, wl.run(fast_pipe, inputs) * 1.01)
    assert not wl.compare(fast_pipe, ref, bad, "exact").ok
    assert wl.flops(ref_pipe, inputs) > 0
    assert wl.extra_metrics(fast_pipe, inputs)["predict_e2e_s"] > 0


@pytest.mark.parametrize("options,message", [
    ({"model": "vit_h"}, "--size tiny builds the tiny SAM"),
    ({"options": {"pointz": 3}}, "unknown sam option.*'pointz'.*did you mean 'points'"),
    ({"options": {"points": "three"}}, "wrong sam option type: points='three'"),
])
def test_workload_refuses_what_it_would_silently_ignore(options, message):
    with pytest.raises(BenchmarkError, match=message):
        get_workload(WorkloadSpec("sam", size="tiny", **options))


def test_int8_dynamic_recipe_meets_the_stated_quantized_bars():
    from fastpipes.kernels.woq import Int8DynamicLinear
    from fastpipes.recipe.load import load_recipe

    wl = get_workload(WorkloadSpec("sam", size="tiny"))
    ref_pipe, q_pipe = wl.build(), wl.build()
    # the recipe as shipped, compiled with the eager backend (wiring, not Inductor's cost)
    recipe = load_recipe("sam_int8_dynamic", ["compile.backend=eager", "compile.options={}",
                                              "attention.block_size=16"])
    report = fastpipes.accelerate(q_pipe, recipe)
    assert report.applied == ["attention", "quantize", "compile"]
    enc = q_pipe.image_encoder
    assert all(isinstance(b.mlp.lin1, Int8DynamicLinear) and isinstance(b.attn.qkv, Int8DynamicLinear)
               for b in enc.blocks)
    assert not any(isinstance(m, Int8DynamicLinear) for m in q_pipe.mask_decoder.modules())
    assert report.precision_class == "int8"  # derived from the passes, not labelled
    inputs = wl.inputs(ref_pipe)
    ref, view = _views(wl, ref_pipe, q_pipe, inputs)
    exact = wl.compare(q_pipe, ref, view, "exact")
    assert exact.metrics["embedding_rel_err"] > 1e-3 and not exact.ok  # not FP32-exact
    fid = wl.compare(q_pipe, ref, view, report.precision_class)
    assert fid.ok, fid.metrics
    assert "(int8 bars)" in fid.thresholds and fid.precision_class == "int8"
    torch._dynamo.reset()


def test_benchmark_run_and_predictor_share_one_compiled_graph():
    """The timed run and the predictor feed the encoder tensors of the same kind (inference
    tensors, contiguous): a compiled encoder must not recompile for predict (it did: the
    dispatch-key and stride guards failed, and predict_e2e_s timed a recompile)."""
    wl = SamWorkload(WorkloadSpec("sam", size="tiny"))
    sam = wl.build()
    # Dynamo's guards without Inductor's compile cost: backend eager
    fastpipes.accelerate(sam, {"compile": {"backend": "eager", "components": ["image_encoder"]}})
    inputs = wl.inputs(sam)
    wl.run(sam, inputs)
    torch._dynamo.config.error_on_recompile = True
    try:
        assert wl.extra_metrics(sam, inputs)["predict_e2e_s"] > 0  # raises on a recompile
    finally:
        torch._dynamo.config.error_on_recompile = False
        torch._dynamo.reset()


# ---- real checkpoints, verified without downloads (issue 13) ------------------------------

def _encode(sam, x):
    with torch.no_grad():
        return sam.image_encoder(x)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_checkpoint_round_trip_gives_the_same_outputs(tmp_path, suffix):
    made = build_sam("tiny", seed=7)
    path = tmp_path / f"sam_tiny{suffix}"
    if suffix == ".pth":
        torch.save(made.state_dict(), path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in made.state_dict().items()}, str(path))
    loaded = build_sam("tiny", checkpoint=path)
    x = torch.randn(1, 3, 128, 128)
    assert torch.equal(_encode(loaded, x), _encode(made, x))
    assert not torch.equal(_encode(build_sam("tiny", seed=8), x), _encode(made, x))
    # through the benchmark's own path too (fastpipes bench sam --checkpoint)
    wl = get_workload(WorkloadSpec("sam", size="tiny", options={"checkpoint": str(path)}))
    assert torch.equal(_encode(wl.build(), x), _encode(made, x))


def test_bad_checkpoints_name_the_file_and_what_was_expected(tmp_path):
    text, empty, truncated, tensor, other = (tmp_path / n for n in
                                             ("t.pth", "e.pth", "c.pth", "x.pth", "o.pth"))
    text.write_text("not a checkpoint\n")
    empty.write_bytes(b"")
    torch.save(build_sam("tiny").state_dict(), truncated)
    truncated.write_bytes(truncated.read_bytes()[:2000])
    torch.save(torch.zeros(3), tensor)
    for path in (text, empty, truncated):
        with pytest.raises(InputError, match=f"SAM checkpoint {path} cannot be read .*expected "
                                             "a segment-anything state dict"):
            build_sam("tiny", checkpoint=path)
    with pytest.raises(InputError, match="holds a Tensor, not a mapping"):
        build_sam("tiny", checkpoint=tensor)
    state = build_sam("tiny").state_dict()
    del state["mask_decoder.iou_token.weight"]
    torch.save(state, other)
    with pytest.raises(InputError, match="1 missing \\(e.g. mask_decoder.iou_token.weight\\)"):
        build_sam("tiny", checkpoint=other)
    with pytest.raises(InputError, match="not found"):
        build_sam("tiny", checkpoint=tmp_path / "nope.pth")


def test_a_checkpoint_of_another_size_says_which_size_it_is(tmp_path):
    # only the shapes that identify a size matter for the message
    state = {"image_encoder.pos_embed": torch.zeros(1, 64, 64, 768)}
    state.update({f"image_encoder.blocks.{i}.norm1.weight": torch.zeros(768) for i in range(12)})
    path = tmp_path / "vit_b.pth"
    torch.save(state, path)
    with pytest.raises(InputError, match="it is a vit_b checkpoint: pass model='vit_b'"):
        build_sam("tiny", checkpoint=path)
