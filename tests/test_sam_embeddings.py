"""A predictor's image embedding saved and loaded back (issue 27, item 7): the same masks
without the encoder, in FP32 or after a recipe cast the weights; refused for another encoder
or a file that is not an embedding, with the reason."""
import numpy as np
import pytest
import torch

import fastpipes
from fastpipes.errors import InputError
from fastpipes.sam.embeddings import encoder_fingerprint
from fastpipes.sam.inputs import smooth_images
from fastpipes.sam.pipeline import build_sam
from fastpipes.sam.predictor import SamPredictor

IMAGE = smooth_images(1, 64, 0)[0][:48]
CLICK = {"point_coords": np.array([[20.0, 30.0]]), "point_labels": np.array([1])}


def test_a_saved_embedding_gives_the_same_masks_without_the_encoder(tmp_path, monkeypatch):
    pred = SamPredictor(build_sam("tiny", seed=0))
    pred.set_image(IMAGE)
    want = pred.predict(**CLICK)
    path = pred.save_embedding(tmp_path / "img.sam.pt")

    later = SamPredictor(build_sam("tiny", seed=0))  # "another process": same checkpoint
    calls = []
    later.model.image_encoder.register_forward_hook(lambda *a: calls.append(1))
    later.load_embedding(path)
    got = later.predict(**CLICK)
    assert not calls  # no encoder call
    assert torch.equal(later.get_image_embedding(), pred.get_image_embedding())
    for w, g in zip(want, got):
        np.testing.assert_array_equal(w, g)


def test_the_fingerprint_survives_a_bf16_cast_but_not_another_checkpoint():
    sam = build_sam("tiny", seed=0)
    before = encoder_fingerprint(sam)
    assert encoder_fingerprint(build_sam("tiny", seed=1)) != before
    fastpipes.accelerate(sam, {"family": "sam", "precision": {"mode": "cast", "dtype": "bfloat16",
                                                              "components": ["image_encoder"]}})
    assert next(sam.image_encoder.parameters()).dtype == torch.bfloat16
    assert encoder_fingerprint(sam) == before


def test_an_embedding_of_another_encoder_is_refused(tmp_path):
    pred = SamPredictor(build_sam("tiny", seed=0))
    pred.set_image(IMAGE)
    path = pred.save_embedding(tmp_path / "img.sam.pt")
    other = SamPredictor(build_sam("tiny", seed=1))
    with pytest.raises(InputError, match="another image encoder"):
        other.load_embedding(path)
    assert not other.is_image_set


@pytest.mark.parametrize("content", [b"not a torch file", None])
def test_a_file_that_is_not_an_embedding_is_refused(tmp_path, content):
    path = tmp_path / "x.pt"
    if content is None:
        torch.save({"weights": torch.zeros(2)}, path)  # a torch file, but no embedding
    else:
        path.write_bytes(content)
    with pytest.raises(InputError, match="not a"):
        SamPredictor(build_sam("tiny")).load_embedding(path)


def test_saving_before_an_image_is_set_says_what_to_do(tmp_path):
    with pytest.raises(InputError, match="set_image"):
        SamPredictor(build_sam("tiny")).save_embedding(tmp_path / "x.pt")
