"""The torch-only SamPredictor: upstream semantics, batched form, and input errors."""
import numpy as np
import pytest
import torch

from fastpipes.errors import InputError
from fastpipes.sam.pipeline import build_sam
from fastpipes.sam.predictor import SamPredictor, preprocess_shape, resize_longest


@pytest.fixture(scope="module")
def sam():
    return build_sam("tiny", seed=0)


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    return np.kron(rng.integers(0, 256, (6, 9, 3), dtype=np.uint8), np.ones((10, 10, 1), np.uint8))


def test_resize_matches_pil_within_one_level(image):
    Image = pytest.importorskip("PIL.Image")
    h, w = preprocess_shape(*image.shape[:2], 128)
    assert (h, w) == (int(60 * 128 / 90 + 0.5), 128)
    ref = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR)).astype(int)
    got = resize_longest(image, 128)[0].permute(1, 2, 0).numpy().astype(int)
    assert np.abs(ref - got).max() <= 1


def test_predict_follows_upstream_pipeline(sam, image):
    pred = SamPredictor(sam)
    pred.set_image(image)
    pt, lab = np.array([[45.0, 30.0]]), np.array([1])
    masks, scores, logits = pred.predict(pt, lab, multimask_output=True)
    assert masks.shape == (3, 60, 90) and masks.dtype == bool
    assert scores.shape == (3,) and logits.shape == (3, 32, 32)
    # the same computation written out with the model's own parts
    with torch.no_grad():
        x = resize_longest(image, 128)
        feats = sam.image_encoder(sam.preprocess(x))
        h, w = x.shape[-2:]
        coords = torch.tensor([[[45.0 * w / 90, 30.0 * h / 60]]])
        sparse, dense = sam.prompt_encoder(points=(coords, torch.tensor([[1]])), boxes=None,
                                           masks=None)
        low, iou = sam.mask_decoder(feats, sam.prompt_encoder.get_dense_pe(), sparse, dense, True)
        full = sam.postprocess_masks(low, (h, w), (60, 90)) > 0
    assert np.allclose(logits, low[0].numpy(), atol=1e-5)
    assert np.allclose(scores, iou[0].numpy(), atol=1e-5)
    assert (masks == full[0].numpy()).all()
    m1, s1, l1 = pred.predict(box=np.array([10, 5, 60, 50]), multimask_output=False)
    assert m1.shape == (1, 60, 90) and s1.shape == (1,)


def test_predict_batch_equals_single_predict(sam, image):
    pred = SamPredictor(sam)
    other = image[:40, :70].copy()
    pts = [np.array([[[45.0, 30.0]], [[10.0, 10.0]]]), np.array([[[5.0, 5.0]]])]
    labs = [np.ones((2, 1)), np.ones((1, 1))]
    out = pred.predict_batch([image, other], pts, labs, multimask_output=False)
    assert out[0][0].shape == (2, 1, 60, 90) and out[1][0].shape == (1, 1, 40, 70)
    for img, p, (masks, scores, logits) in zip([image, other], pts, out):
        pred.set_image(img)
        for j in range(len(p)):
            m, s, lo = pred.predict(p[j], np.ones(1), multimask_output=False)
            assert np.allclose(lo, logits[j], atol=1e-4)
            assert (m == masks[j]).mean() > 0.999


def test_input_errors(sam, image):
    pred = SamPredictor(sam)
    with pytest.raises(InputError, match="before predict"):
        pred.predict(np.array([[1, 1]]), np.array([1]))
    with pytest.raises(InputError, match="uint8"):
        pred.set_image(image.astype(np.float32))
    with pytest.raises(InputError, match="H x W x 3"):
        pred.set_image(image[..., 0])
    with pytest.raises(InputError, match="numpy"):
        pred.set_image(torch.zeros(4, 4, 3))
    pred.set_image(image)
    with pytest.raises(InputError, match="outside the image"):
        pred.predict(np.array([[95.0, 10.0]]), np.array([1]))
    with pytest.raises(InputError, match="one label per point"):
        pred.predict(np.array([[5.0, 10.0]]), np.array([1, 1]))
    with pytest.raises(InputError, match="together"):
        pred.predict(np.array([[5.0, 10.0]]))
    with pytest.raises(InputError, match="x0 <= x1"):
        pred.predict(box=np.array([50, 5, 10, 50]))
    with pytest.raises(InputError, match="one entry per image"):
        pred.predict_batch([image, image], [np.zeros((1, 1, 2))], [np.ones((1, 1))])
