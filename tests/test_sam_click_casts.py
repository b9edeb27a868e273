"""The per-click overhead source at tiny shapes: a decoder under autocast re-casts its FP32
weights on every click; one cast once (precision mode cast) re-casts none and still matches
FP32's masks. Counts, not timings."""
import numpy as np
import pytest
import torch

import fastpipes
from fastpipes.sam.click import click_prompts
from fastpipes.sam.click_casts import weight_casts_per_call
from fastpipes.sam.inputs import mask_iou, seeded_features
from fastpipes.sam.pipeline import build_sam
from fastpipes.sam.predictor import SamPredictor


def _predictor(overrides):
    pred = SamPredictor(build_sam("tiny", seed=0))
    if overrides is not None:
        fastpipes.accelerate(pred, overrides)
    pred.set_features(seeded_features(pred.model, 0), (48, 64))
    return pred


def _decoder_precision(mode):
    return {"precision": {"mode": mode, "dtype": "bfloat16", "components": ["mask_decoder"]}}


def _click(pred):
    prompt = click_prompts("point", 48, 64, seed=0)[0]
    return lambda: pred.predict(**prompt, multimask_output=True)


def test_autocast_decoder_recasts_its_weights_every_click():
    pred = _predictor(_decoder_precision("autocast"))
    first = weight_casts_per_call(pred.model.mask_decoder, _click(pred))
    again = weight_casts_per_call(pred.model.mask_decoder, _click(pred))
    assert first > 0 and again == first  # the counter sees autocast's casts, each click


def test_cast_decoder_makes_no_weight_casts_per_click():
    pred = _predictor(_decoder_precision("cast"))
    assert all(p.dtype == torch.bfloat16 for p in pred.model.mask_decoder.parameters())
    assert weight_casts_per_call(pred.model.mask_decoder, _click(pred)) == 0


def test_fp32_click_makes_no_weight_casts():
    pred = _predictor(None)
    assert weight_casts_per_call(pred.model.mask_decoder, _click(pred)) == 0


def test_cast_decoder_masks_match_fp32():
    ref, low = _predictor(None), _predictor(_decoder_precision("cast"))
    prompt = click_prompts("point", 48, 64, seed=0)[0]
    a = ref.predict(**prompt, multimask_output=True)[0]
    b = low.predict(**prompt, multimask_output=True)[0]
    assert a.shape == b.shape and a.dtype == b.dtype == np.bool_
    ious = [mask_iou(torch.from_numpy(a[i]), torch.from_numpy(b[i])) for i in range(a.shape[0])]
    assert min(ious) >= 0.97, ious  # the bf16 class bar (SAM_BARS)


@pytest.mark.slow  # compiles the tiny decoder
def test_fp32_click_recipe_decodes_the_fp32_masks_in_fp32():
    pred, ref = _predictor("sam_fp32_click"), _predictor(None)
    assert all(p.dtype == torch.float32 for p in pred.model.mask_decoder.parameters())
    prompt = click_prompts("point", 48, 64, seed=0)[0]
    a = ref.predict(**prompt, multimask_output=True)[0]
    b = pred.predict(**prompt, multimask_output=True)[0]
    ious = [mask_iou(torch.from_numpy(a[i]), torch.from_numpy(b[i])) for i in range(a.shape[0])]
    assert min(ious) >= 0.99, ious
