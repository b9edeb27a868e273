"""openvino pass: the built-in recipes meet their class bars on tiny SAM and SDXL models, a
converted model is read back from the cache instead of converted again, and a failure
leaves the pipeline as it was. Skipped with the reason where OpenVINO does not import."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import fastpipes
import fastpipes.passes.openvino as ov_pass
from fastpipes.bench.workloads import get_workload
from fastpipes.bench.workloads.base import WorkloadSpec
from fastpipes.errors import FastpipesError, InputError, PassError, PreflightError
from fastpipes.openvino_probe import import_openvino
from fastpipes.recipe.load import load_recipe

OV, WHY = import_openvino()
needs_openvino = pytest.mark.skipif(OV is None, reason=f"OpenVINO does not import: {WHY}")
SAM_PARTS = ["image_encoder", "prompt_encoder", "mask_decoder"]


def _fidelity(family: str, recipe):
    wl = get_workload(WorkloadSpec(family, size="tiny"))
    ref_pipe, pipe = wl.build(), wl.build()
    report = fastpipes.accelerate(pipe, recipe)
    inputs = wl.inputs(ref_pipe)
    ref = wl.view(ref_pipe, inputs, wl.run(ref_pipe, inputs))
    view = wl.view(pipe, inputs, wl.run(pipe, inputs), ref)
    return report, wl.compare(pipe, ref, view, report.precision_class), pipe


def test_import_fastpipes_never_imports_openvino():
    # the passes and families load on first use (import fastpipes alone loads neither)
    code = ("import sys, fastpipes, fastpipes.passes, fastpipes.families, fastpipes.api\n"
            "assert 'openvino' not in sys.modules, 'imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


@needs_openvino
@pytest.mark.parametrize("family,name,klass", [("sam", "sam_openvino_bf16", "bf16"),
                                               ("sam", "sam_openvino_int8", "int8"),
                                               ("sdxl", "sdxl_openvino", "exact"),
                                               ("sdxl", "sdxl_openvino_int8", "int8")])
def test_builtin_recipe_meets_its_class_bars_on_a_tiny_model(family, name, klass):
    report, fid, pipe = _fidelity(family, name)
    assert report.applied == ["openvino"] and report.precision_class == klass
    assert fid.ok, (fid.metrics, fid.thresholds)
    for comp in load_recipe(name).sections["openvino"].components:
        assert "compiled for" in " ".join(c for c in report.passes[0].changes if c.startswith(comp))


@needs_openvino
def test_sam_prompt_rewrite_matches_upstream_for_points_and_boxes():
    wl = get_workload(WorkloadSpec("sam", size="tiny"))
    ref, pipe = wl.build(), wl.build()
    fastpipes.accelerate(pipe, {"family": "sam", "openvino": {"components": SAM_PARTS,
                                                              "precision": "f32"}})
    g = torch.Generator().manual_seed(1)
    points = (torch.rand(2, 3, 2, generator=g) * 128, torch.tensor([[1., 0., 1.], [1., 1., 0.]]))
    boxes = torch.tensor([[10., 20., 60., 90.], [5., 5., 100., 100.]])
    for kw in (dict(points=points, boxes=None), dict(points=points, boxes=boxes),
               dict(points=None, boxes=boxes)):
        with torch.inference_mode():
            want = ref.prompt_encoder(masks=None, **kw)
            got = pipe.prompt_encoder(masks=None, **kw)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    emb = torch.randn(1, 32, 8, 8)
    with torch.inference_mode():
        sparse, dense = ref.prompt_encoder(points=points, boxes=None, masks=None)
        pe = ref.prompt_encoder.get_dense_pe()
        for multi in (True, False):
            want = ref.mask_decoder(emb, pe, sparse[:1], dense[:1], multimask_output=multi)
            got = pipe.mask_decoder(emb, pe, sparse[:1], dense[:1], multimask_output=multi)
            torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-4)


@needs_openvino
def test_a_converted_model_is_read_back_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTPIPES_CACHE_DIR", str(tmp_path))
    recipe = {"family": "sam", "openvino": {"components": ["image_encoder"]}}
    first, _, _ = _fidelity("sam", recipe)
    assert "converted in" in first.passes[0].changes[0]
    assert set(first.extra["openvino_convert_s"]) == {"image_encoder"}
    files = sorted(p.suffix for p in (tmp_path / "openvino").iterdir() if p.name[0] != ".")
    assert files == [".bin", ".json", ".xml"]

    def no_conversion(*a, **k):
        raise AssertionError("converted again although the cache holds the model")

    monkeypatch.setattr(ov_pass, "convert", no_conversion)
    again, fid, _ = _fidelity("sam", recipe)
    assert "read from the cache" in again.passes[0].changes[0] and fid.ok
    # a warm start runs no PyTorch forward of the component (inputs are captured before it)
    sam = get_workload(WorkloadSpec("sam", size="tiny")).build()
    ran = []
    sam.image_encoder.register_forward_hook(lambda *a: ran.append(1))
    fastpipes.accelerate(sam, recipe)
    assert ran == []
    # a damaged entry is not read: converted again, and the warning says why
    monkeypatch.undo()
    monkeypatch.setenv("FASTPIPES_CACHE_DIR", str(tmp_path))
    bin_file = next((tmp_path / "openvino").glob("*.bin"))
    bin_file.write_bytes(bin_file.read_bytes()[:-4] + b"\0\0\0\1")
    third, fid, _ = _fidelity("sam", recipe)
    assert "converted in" in third.passes[0].changes[0] and fid.ok
    assert any("does not match the sha256" in w for w in third.warnings)


@needs_openvino
def test_a_failed_conversion_leaves_the_pipeline_unchanged(monkeypatch):
    wl = get_workload(WorkloadSpec("sam", size="tiny"))
    pipe = wl.build()
    inputs = wl.inputs(pipe)
    before = wl.run(pipe, inputs)
    real = ov_pass.convert

    def fail_on_decoder(ov, module, example):
        if type(module).__name__ == "DecoderCore":
            raise RuntimeError("conversion failed on purpose")
        return real(ov, module, example)

    monkeypatch.setattr(ov_pass, "convert", fail_on_decoder)
    with pytest.raises(PassError, match="openvino.*conversion failed on purpose"):
        fastpipes.accelerate(pipe, {"family": "sam", "openvino": {"components": SAM_PARTS,
                                                                  "cache": False}})
    for module in (pipe.image_encoder, pipe.prompt_encoder, pipe.mask_decoder):
        assert "forward" not in module.__dict__
    torch.testing.assert_close(wl.run(pipe, inputs), before, rtol=0, atol=0)


@needs_openvino
def test_static_shapes_refuse_another_shape_and_dynamic_accepts_it():
    wl = get_workload(WorkloadSpec("sam", size="tiny"))
    static, dynamic = wl.build(), wl.build()
    fastpipes.accelerate(static, {"family": "sam", "openvino": {"components": ["image_encoder"]}})
    fastpipes.accelerate(dynamic, {"family": "sam", "openvino": {
        "components": ["image_encoder"], "shapes": "dynamic", "precision": "f32"}})
    x = torch.randn(2, 3, 128, 128)
    with pytest.raises(InputError, match=r"converted for static input shapes \[\(1, 3, 128, "
                                         r"128\)\]; this call has \[\(2, 3, 128, 128\)\]"):
        static.image_encoder(x)
    assert dynamic.image_encoder(x).shape == (2, 32, 8, 8)


@needs_openvino
def test_sdxl_pipeline_runs_through_openvino_and_refuses_another_resolution():
    from fastpipes.sdxl.build import build_sdxl

    ref, pipe = build_sdxl("tiny"), build_sdxl("tiny")
    fastpipes.accelerate(pipe, "sdxl_openvino")
    kw = dict(prompt="a cat", num_inference_steps=2, output_type="pt")
    with torch.inference_mode():
        want = ref(generator=torch.Generator().manual_seed(0), **kw).images
        got = pipe(generator=torch.Generator().manual_seed(0), **kw).images
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-4)
        with pytest.raises(InputError, match=r"unet was converted for static input shapes "
                                             r"\[\(2, 4, 8, 8\).*this call has \[\(2, 4, 12, 12\)"):
            pipe(height=96, width=96, **kw)


def test_without_openvino_the_recipe_is_refused_and_auto_skips_it(monkeypatch):
    import fastpipes.hardware as hw
    from fastpipes.auto_order import candidate_recipes
    from fastpipes.recipe.schema import AutoConfig

    why = "openvino is not installed; install it with `pip install 'fastpipes[openvino]'`"
    monkeypatch.setattr(ov_pass, "import_openvino", lambda: (None, why))
    monkeypatch.setattr(hw, "openvino_unavailable", lambda: why)
    sam = get_workload(WorkloadSpec("sam", size="tiny")).build()
    with pytest.raises(PreflightError, match="OpenVINO is unavailable: openvino is not installed"):
        fastpipes.accelerate(sam, "sam_openvino_bf16")
    assert "forward" not in sam.image_encoder.__dict__
    names = candidate_recipes("sam", hw.detect(), AutoConfig())
    assert names and not any("openvino" in n for n in names)


@pytest.mark.parametrize("section,message", [
    ({"components": []}, "openvino.components: name the components to convert"),
    ({"components": ["image_encoder"], "weights": "int2"}, "openvino.weights"),
    ({"components": ["image_encoder"], "group_size": 100}, "int4 group_size 100"),
])
def test_bad_fields_are_refused_before_the_model_is_touched(section, message):
    with pytest.raises(FastpipesError, match=message):
        load_recipe({"family": "sam", "openvino": section})


@needs_openvino
def test_other_passes_on_a_converted_component_are_refused():
    sam = get_workload(WorkloadSpec("sam", size="tiny")).build()
    with pytest.raises(PreflightError, match="precision would change image_encoder"):
        fastpipes.accelerate(sam, {"family": "sam", "precision": {"dtype": "bfloat16"},
                                   "openvino": {"components": ["image_encoder"]}})
    # (Llama: tests/test_pass_openvino_llama.py)


def test_builtin_recipes_that_use_openvino_say_they_need_it():
    from fastpipes.recipe.load import available

    names = [n for n in available() if load_recipe(n).section("openvino") is not None]
    assert {"sam_openvino_bf16", "sam_openvino_int8", "sdxl_openvino", "llama_openvino_int4",
            "llama_openvino_int8", "llama_openvino_f32"} <= set(names)
    assert all(load_recipe(n).requires.openvino for n in names)


@needs_openvino
def test_click_bench_extras_of_a_converted_decoder_leave_out_only_its_inner_parts():
    # the decoder's transformer and upscaling run inside one OpenVINO model: no PyTorch
    # module of theirs is called, so they have no time (as for a compiled decoder)
    spec = WorkloadSpec("sam", size="tiny", options={"workload": "click"})
    wl = get_workload(spec)
    pipe = wl.build()
    fastpipes.accelerate(pipe, "sam_openvino_bf16")
    extra = wl.extra_metrics(pipe, wl.inputs(pipe))
    assert all(extra[f"click_{p}_ms"] > 0 for p in ("prompt_encoder", "mask_decoder",
                                                    "postprocess", "wall"))
    assert {f"click_{k}_{m}_ms" for k in ("point", "points", "box")
            for m in ("single", "multi")} <= set(extra)
    assert not {"click_transformer_ms", "click_upscaling_ms"} & set(extra)
