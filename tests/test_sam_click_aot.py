"""sam_bf16_click_aot on the tiny SAM predictor: both components compiled ahead of time
(two AOTInductor compiles in this file, ~35 s on 2 cores), masks within the bf16 bars of
FP32's, and a later predictor loads the packages instead of compiling — so a click runs one
package call, with no Dynamo frame, guard or recompile (the per-call overhead that made
JIT-compiled BF16 decoders slower than FP32 at tiny shapes, docs/sam.md)."""
import numpy as np
import pytest
import torch

import fastpipes
from fastpipes.hardware import detect
from fastpipes.passes import compile_aot
from fastpipes.sam.inputs import mask_iou, smooth_images
from fastpipes.sam.pipeline import build_sam
from fastpipes.sam.predictor import SamPredictor

pytestmark = pytest.mark.skipif(not detect().bf16_native,
                                reason="sam_bf16_click_aot requires native BF16")
CLICK = dict(point_coords=np.array([[100.0, 80.0]]), point_labels=np.array([1]),
             multimask_output=True)


def predictor() -> SamPredictor:
    pred = SamPredictor(build_sam("tiny", seed=0))
    pred.set_image(smooth_images(1, 256, 0)[0])  # eager, FP32: the reference
    return pred


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("aot-sam")
    mp = pytest.MonkeyPatch()
    mp.setenv("FASTPIPES_CACHE_DIR", str(root))
    yield root
    mp.undo()


def test_clicks_stay_within_the_bf16_bars_and_compile_once(cache_root):
    ref = predictor()
    want, _, _ = ref.predict(**CLICK)
    pred = SamPredictor(build_sam("tiny", seed=0))
    report = fastpipes.accelerate(pred, "sam_bf16_click_aot")
    pred.set_image(smooth_images(1, 256, 0)[0])
    got, _, _ = pred.predict(**CLICK)
    assert min(mask_iou(w, g) for w, g in zip(want, got)) >= 0.97  # SAM's bf16 mask bar
    packages = report.extra["compile_cache"]
    assert set(packages) == {"image_encoder", "mask_decoder"}
    assert all(p["package"].startswith("compiled into") for p in packages.values())
    assert len(list((cache_root / "aoti").glob("*.pt2"))) == 2


def test_a_later_predictor_loads_the_packages_and_each_click_runs_one(cache_root, monkeypatch):
    def no_compile(*a, **k):
        raise AssertionError("compiled again: the cached package was not used")

    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package", no_compile)
    monkeypatch.setattr(torch, "compile", no_compile)  # nor a JIT graph in its place
    pred = SamPredictor(build_sam("tiny", seed=0))
    report = fastpipes.accelerate(pred, "sam_bf16_click_aot")
    pred.set_image(smooth_images(1, 256, 0)[0])
    pred.predict(**CLICK)  # the decoder's package loads at its first call
    calls, run = [], compile_aot.Package.__call__
    monkeypatch.setattr(compile_aot.Package, "__call__",
                        lambda self, args, kwargs: calls.append(1) or run(self, args, kwargs))
    for _ in range(3):
        pred.predict(**CLICK)
    assert len(calls) == 3  # one package call per click: no eager fallback, no Dynamo
    assert all(p["package"].startswith("loaded")
               for p in report.extra["compile_cache"].values())
