"""A random-weight Llama written shard by shard (llama/random_dir.py): the directory holds
build_llama's seeded weights exactly, and no more than one shard's tensors exist at once."""
import json

import torch

import fastpipes.llama.random_dir as random_dir
from fastpipes.llama.pipeline import build_llama


def test_the_directory_holds_build_llamas_weights_one_shard_at_a_time(tmp_path, monkeypatch):
    import safetensors.torch as st

    written, save_file = [], st.save_file  # save_random_llama imports it when called

    def spy(tensors, filename, metadata=None):
        written.append(sum(t.numel() * t.element_size() for t in tensors.values()))
        return save_file(tensors, filename, metadata=metadata)

    monkeypatch.setattr(st, "save_file", spy)
    random_dir.save_random_llama("tiny", tmp_path, torch.bfloat16, seed=3, shard_bytes=100_000)
    index = json.loads((tmp_path / random_dir.INDEX).read_text())
    assert len(written) == len(set(index["weight_map"].values())) > 2
    biggest = 512 * 128 * 2  # the embedding: a shard of its own
    assert max(written) <= max(100_000, biggest)
    assert "lm_head.weight" not in index["weight_map"]  # tied: saved once, as the embedding
    assert index["metadata"]["total_size"] == sum(written)
    got = build_llama(str(tmp_path), dtype=torch.bfloat16)
    ref = build_llama("tiny", seed=3, dtype=torch.bfloat16)
    assert got.lm_head.weight is got.model.embed_tokens.weight
    sd = got.state_dict()
    for name, t in ref.state_dict().items():
        assert sd[name].dtype == torch.bfloat16 and torch.equal(sd[name], t), name
    assert got.generation_config.pad_token_id == ref.generation_config.pad_token_id


def test_one_shard_is_model_safetensors(tmp_path):
    random_dir.save_random_llama("tiny", tmp_path, torch.float32)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "config.json", "generation_config.json", "model.safetensors"]
    assert torch.equal(build_llama(str(tmp_path)).model.norm.weight, torch.ones(128))
