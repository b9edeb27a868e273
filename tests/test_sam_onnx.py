"""`fastpipes export sam-onnx` (issue 27, item 7): SAM's prompt encoder + mask decoder as ONNX
with upstream SamOnnxModel's inputs and outputs. Checked against fastpipes' own predictor on
the tiny model: onnxruntime's masks, scores and low-res logits agree to 1e-4 (FP32) for points,
a box, and a mask prompt. Skipped only where the export extra (onnx, onnxscript) is absent."""
import sys

import numpy as np
import pytest
import torch

from fastpipes.cli.main import main
from fastpipes.sam.onnx_export import INPUTS, OUTPUTS, SamOnnxModel
from fastpipes.sam.pipeline import build_sam
from fastpipes.sam.predictor import SamPredictor, preprocess_shape

TOL = 1e-4  # FP32 logits, the same graph in another runtime


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    pytest.importorskip("onnx", reason="the export extra is not installed: "
                                       "pip install 'fastpipes[export]'")
    pytest.importorskip("onnxscript", reason="the export extra is not installed: "
                                             "pip install 'fastpipes[export]'")
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    assert main(["export", "sam-onnx", "--model", "tiny", "--random-weights",
                 "--out", str(path)]) == 0
    return path


def test_the_file_has_upstreams_inputs_and_outputs(exported):
    import onnx

    model = onnx.load(str(exported))
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == list(INPUTS)
    assert [o.name for o in model.graph.output] == list(OUTPUTS)
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
            for i in model.graph.input}
    assert dims["point_coords"] == [1, "num_points", 2]  # any number of points
    assert dims["image_embeddings"] == [1, 32, 8, 8]  # tiny: 32 channels, 8 x 8 tokens


def _image(h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(h * 1000 + w)
    return np.kron(rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3), dtype=np.uint8),
                   np.ones((4, 4, 1), np.uint8))[:h, :w].copy()


def _feeds(pred: SamPredictor, h: int, w: int, points=None, labels=None, box=None,
           mask=None) -> dict:
    """What upstream's ONNX notebook feeds: points in the encoder's frame, a padding point
    when there is no box, box corners labelled 2 and 3."""
    rh, rw = preprocess_shape(h, w, pred.model.image_encoder.img_size)
    scale = np.array([rw / w, rh / h], np.float32)
    coords, labs = [], []
    if points is not None:
        coords += list(np.asarray(points, np.float32) * scale)
        labs += list(labels)
    if box is not None:
        coords += list(np.asarray(box, np.float32).reshape(2, 2) * scale)
        labs += [2, 3]
    else:
        coords.append(np.zeros(2, np.float32))
        labs.append(-1)
    low = mask if mask is not None else np.zeros((1, 1, 32, 32), np.float32)
    return {"image_embeddings": pred.get_image_embedding().numpy(),
            "point_coords": np.array(coords, np.float32)[None],
            "point_labels": np.array([labs], np.float32),
            "mask_input": low.astype(np.float32),
            "has_mask_input": np.array([float(mask is not None)], np.float32),
            "orig_im_size": np.array([h, w], np.float32)}


CASES = [((48, 64), dict(points=[[20, 30]], labels=[1])),
         ((100, 70), dict(points=[[10, 10], [50, 80]], labels=[1, 0])),
         ((30, 200), dict(box=[20, 5, 150, 25])),
         ((64, 64), dict(points=[[30, 40]], labels=[1], box=[5, 5, 60, 60]))]


@pytest.mark.parametrize("size, prompt", CASES)
def test_onnxruntime_agrees_with_the_predictor(exported, size, prompt):
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    pred = SamPredictor(build_sam("tiny", seed=0))  # what --random-weights --seed 0 built
    h, w = size
    pred.set_image(_image(h, w))
    masks, iou, low = sess.run(None, _feeds(pred, h, w, **prompt))
    want = pred.predict(np.array(prompt["points"]) if "points" in prompt else None,
                        np.array(prompt["labels"]) if "labels" in prompt else None,
                        np.array(prompt["box"]) if "box" in prompt else None,
                        multimask_output=True, return_logits=True)
    assert masks.shape == (1, 4, h, w)  # mask 0 (single) + the three multimask outputs
    for got, ref in zip((masks[0, 1:], iou[0, 1:], low[0, 1:]), want):
        np.testing.assert_allclose(got, ref, atol=TOL, rtol=0)
    # ... and with a mask prompt (the previous low-res logits), as the predictor takes one
    best = int(np.argmax(want[1]))
    again = sess.run(None, _feeds(pred, h, w, **prompt, mask=want[2][best][None, None]))
    ref = pred.predict(np.array(prompt["points"]) if "points" in prompt else None,
                       np.array(prompt["labels"]) if "labels" in prompt else None,
                       np.array(prompt["box"]) if "box" in prompt else None,
                       mask_input=want[2][best][None], multimask_output=True,
                       return_logits=True)
    np.testing.assert_allclose(again[0][0, 1:], ref[0], atol=TOL, rtol=0)


def test_single_mask_follows_upstreams_rule():
    """One point: the best of the three multimask outputs; more points: mask 0."""
    sam = build_sam("tiny", seed=0)
    pred = SamPredictor(sam)
    pred.set_image(_image(48, 64))
    model = SamOnnxModel(sam, return_single_mask=True)
    for prompt in (dict(points=[[20, 30]], labels=[1]),
                   dict(points=[[10, 10], [40, 30]], labels=[1, 0])):
        feeds = {k: torch.from_numpy(v) for k, v in _feeds(pred, 48, 64, **prompt).items()}
        masks, iou, _ = model(*feeds.values())
        multi = pred.predict(np.array(prompt["points"]), np.array(prompt["labels"]),
                             multimask_output=True, return_logits=True)
        single = pred.predict(np.array(prompt["points"]), np.array(prompt["labels"]),
                              multimask_output=False, return_logits=True)
        ref = multi if len(prompt["points"]) == 1 else single
        pick = int(np.argmax(ref[1])) if len(prompt["points"]) == 1 else 0
        assert masks.shape == (1, 1, 48, 64)
        np.testing.assert_allclose(masks[0, 0].numpy(), ref[0][pick], atol=TOL, rtol=0)
        np.testing.assert_allclose(iou[0, 0].item(), ref[1][pick], atol=TOL)


def test_without_the_extra_the_command_names_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # `import onnxscript` now fails
    assert main(["export", "sam-onnx", "--model", "tiny", "--random-weights",
                 "--out", str(tmp_path / "x.onnx")]) == 1
    assert "fastpipes[export]" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def test_checkpoint_or_random_weights_is_required(tmp_path, capsys):
    assert main(["export", "sam-onnx", "--model", "tiny", "--out", str(tmp_path / "x.onnx")]) == 1
    assert "--random-weights" in capsys.readouterr().err
