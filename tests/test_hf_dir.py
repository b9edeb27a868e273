"""Local Hugging Face Llama directories through build_llama: a round trip, and every bad
directory is an InputError naming the file and what was expected (issue 14 item 10)."""
import shutil

import pytest
import torch

pytest.importorskip("transformers")
from fastpipes.errors import InputError  # noqa: E402
from fastpipes.llama.pipeline import build_llama  # noqa: E402


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny seeded Llama saved with save_pretrained, and its logits before saving."""
    model = build_llama("tiny", seed=3)
    if hasattr(model, "set_attn_implementation"):  # transformers >= 4.56
        model.set_attn_implementation("sdpa")  # what from_pretrained picks
    else:
        model.config._attn_implementation = "sdpa"
    path = tmp_path_factory.mktemp("llama") / "ok"
    model.save_pretrained(path)
    ids = torch.tensor([[5, 17, 99, 3, 250, 7]])
    with torch.no_grad():
        return path, ids, model(ids).logits


def _copy(saved, tmp_path):
    dst = tmp_path / "m"
    shutil.copytree(saved[0], dst)
    return dst


def test_round_trip_equals_the_model_before_saving(saved):
    path, ids, before = saved
    with torch.no_grad():
        assert torch.equal(build_llama(str(path))(ids).logits, before)


def test_missing_tensor_is_an_error_naming_it(saved, tmp_path):
    from safetensors.torch import load_file, save_file

    d = _copy(saved, tmp_path)
    tensors = load_file(str(d / "model.safetensors"))
    del tensors["model.layers.1.mlp.down_proj.weight"]
    save_file(tensors, str(d / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(InputError, match=r"lacks 1 weight.*model\.layers\.1\.mlp\.down_proj\.weight"):
        build_llama(str(d))


@pytest.mark.parametrize("damage, message", [
    ("truncate", r"model\.safetensors is not a readable safetensors file"),
    ("text", r"model\.safetensors is not a readable safetensors file"),
    ("no_weights", r"has no weights; expected model\.safetensors"),
    ("no_config", r"has no config\.json; expected a Hugging Face model directory"),
    ("bad_config", r"config\.json is not a model config"),
])
def test_damaged_directory_names_the_file(saved, tmp_path, damage, message):
    d = _copy(saved, tmp_path)
    weights = d / "model.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "text":
        weights.write_text("these are not weights\n")
    elif damage == "no_weights":
        weights.unlink()
    elif damage == "no_config":
        (d / "config.json").unlink()
    else:
        (d / "config.json").write_text("{ not json")
    with pytest.raises(InputError, match=message):
        build_llama(str(d))


def test_a_file_or_a_missing_path_is_not_a_model(tmp_path):
    text = tmp_path / "model.txt"
    text.write_text("hello\n")
    with pytest.raises(InputError, match=r"model\.txt is a file; expected a Hugging Face"):
        build_llama(str(text))
    with pytest.raises(InputError, match=r"nowhere is not found; expected a Hugging Face"):
        build_llama(str(tmp_path / "nowhere"))
