"""SAM clicks (issue 24): the per-click fast path, accelerated clicks against the original
at tiny shapes (same embedding, stated tolerances) and the click benchmark workload."""
import numpy as np
import pytest
import torch

import fastpipes
from fastpipes.bench.workloads import WorkloadSpec, get_workload
from fastpipes.sam.click import PROMPTS, click_prompts
from fastpipes.errors import BenchmarkError, InputError
from fastpipes.sam.inputs import mask_iou, seeded_features
from fastpipes.sam.pipeline import build_sam
from fastpipes.sam.predictor import SamPredictor

SIZE = (96, 128)  # a 4:3 picture at the tiny encoder's 128 px


def _predictor(recipe=None) -> SamPredictor:
    pred = SamPredictor(build_sam("tiny", seed=0))
    if recipe is not None:
        fastpipes.accelerate(pred, recipe)
    pred.set_features(seeded_features(pred.model, 0), SIZE)
    return pred


def _clicks():
    return [(p, mm) for kind in PROMPTS for p in click_prompts(kind, *SIZE, seed=3, n=2)
            for mm in (False, True)]


def test_a_click_does_not_rebuild_the_dense_positional_encoding():
    pred = _predictor()
    calls = []
    pe = pred.model.prompt_encoder
    original = pe.get_dense_pe
    pe.get_dense_pe = lambda: calls.append(1) or original()
    try:
        for prompt, mm in _clicks():
            pred.predict(**prompt, multimask_output=mm)
        pred.predict_prompts(np.array([[[10.0, 20.0]], [[30.0, 40.0]]]), np.ones((2, 1)))
    finally:
        del pe.get_dense_pe
    assert calls == []  # made once by set_features, not per click


def test_set_features_gives_the_masks_of_set_image():
    sam = build_sam("tiny", seed=0)
    img = np.kron(np.random.default_rng(0).integers(0, 256, (6, 8, 3), dtype=np.uint8),
                  np.ones((16, 16, 1), np.uint8))  # 96 x 128
    a, b = SamPredictor(sam), SamPredictor(sam)
    a.set_image(img)
    b.set_features(a._state.features.clone(), img.shape[:2])
    for prompt, mm in _clicks():
        ma, sa, la = a.predict(**prompt, multimask_output=mm)
        mb, sb, lb = b.predict(**prompt, multimask_output=mm)
        assert (ma == mb).all() and np.array_equal(sa, sb) and np.array_equal(la, lb)


@pytest.mark.parametrize("bad", [torch.zeros(1, 32, 8, 7), torch.zeros(2, 32, 8, 8), "x"])
def test_set_features_rejects_what_is_not_this_models_embedding(bad):
    pred = SamPredictor(build_sam("tiny", seed=0))
    with pytest.raises(InputError, match=r"\[1, 32, 8, 8\]"):
        pred.set_features(bad, SIZE)
    assert not pred.is_image_set


def _compare(pred, ref, min_iou, logits_atol=None):
    for prompt, mm in _clicks():
        m_ref, _, l_ref = ref.predict(**prompt, multimask_output=mm)
        m, _, low = pred.predict(**prompt, multimask_output=mm)
        for i in range(m.shape[0]):
            iou = mask_iou(torch.from_numpy(m_ref[i]), torch.from_numpy(m[i]))
            assert iou >= min_iou, (prompt, mm, i, iou)
        if logits_atol is not None:
            np.testing.assert_allclose(low, l_ref, rtol=0, atol=logits_atol)


def test_exact_recipe_clicks_give_the_original_masks():
    # sam_fp32_fast changes the image encoder only: a click is the original computation
    _compare(_predictor("sam_fp32_fast"), _predictor(), 1.0, logits_atol=1e-5)


def test_bf16_decoder_clicks_keep_the_bf16_bar():
    # the same embedding in both: what differs is the BF16 prompt path alone (bar 0.97)
    _compare(_predictor("sam_bf16"), _predictor(), 0.97)


@pytest.mark.slow  # compiles the tiny decoder (~20-60 s on 2 loaded cores)
def test_compiled_decoder_clicks_are_faithful_and_compile_once():
    from torch._dynamo.utils import counters

    pred, ref = _predictor("sam_bf16_click"), _predictor()
    prompt = click_prompts("point", *SIZE, seed=3)[0]
    pred.predict(**prompt)  # the first click compiles the decoder
    graphs = counters["stats"]["unique_graphs"]
    assert graphs >= 1
    for _ in range(3):  # more clicks of the same kind: the compiled graph, no recompile
        m, _, _ = pred.predict(**prompt)
    assert counters["stats"]["unique_graphs"] == graphs
    m_ref = ref.predict(**prompt)[0]
    assert min(mask_iou(torch.from_numpy(m_ref[i]), torch.from_numpy(m[i]))
               for i in range(3)) >= 0.97


def test_click_workload_times_parts_and_judges_masks():
    spec = WorkloadSpec("sam", size="tiny", options={"workload": "click", "prompt": "box",
                                                     "multimask": False})
    wl = get_workload(spec)
    assert wl.unit == "clicks" and "box prompt, 1 mask" in wl.describe()
    ref_pipe, pipe = wl.build(), wl.build()
    ref_in, inputs = wl.inputs(ref_pipe), wl.inputs(pipe)
    reference = wl.view(ref_pipe, ref_in, wl.run(ref_pipe, ref_in))
    assert len(reference["masks"]) == 1 + 3 * len(PROMPTS)
    fastpipes.accelerate(pipe, "sam_bf16")
    fid = wl.compare(pipe, reference, wl.view(pipe, inputs, wl.run(pipe, inputs), reference),
                     "bf16")
    assert fid.ok and fid.metrics["mask_iou_min"] >= 0.97
    extra = wl.extra_metrics(ref_pipe, ref_in)
    parts = ("prompt_encoder", "mask_decoder", "postprocess", "transformer", "upscaling")
    assert all(extra[f"click_{p}_ms"] > 0 for p in parts)
    assert extra["click_wall_min_ms"] <= extra["click_wall_ms"] <= extra["click_wall_max_ms"]
    assert {f"click_{k}_{m}_ms" for k in PROMPTS for m in ("single", "multi")} <= set(extra)
    assert "_mask_decoder" not in vars(ref_pipe)  # the part timers are gone again


@pytest.mark.parametrize("options, match", [
    ({"workload": "clicks"}, "workload must be one of encoder, click"),
    ({"workload": "click", "prompt": "lasso"}, "prompt must be one of point, points, box"),
    ({"prompt": "box"}, "add --workload click"),
])
def test_click_workload_options_are_checked(options, match):
    with pytest.raises(BenchmarkError, match=match):
        get_workload(WorkloadSpec("sam", size="tiny", options=options))
