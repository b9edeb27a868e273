"""A random-weight Llama written as a Hugging Face directory shard by shard, never whole.

``build_llama("llama-2-7b").save_pretrained(dir)`` needs the model in memory: 27 GB in FP32,
13.5 GB in BF16 (then save_pretrained's own bookkeeping on top), more than a 24 GB machine
running anything else can give. Here the model is made on the meta device for its parameter
names and shapes only; each shard's tensors (about `shard_bytes`) are drawn, written and
dropped before the next shard's are drawn. The values are :func:`build_llama`'s: the same
seeded generator fills the same parameters in the same order (N(0, 0.02), norms 1), so the
directory loads to exactly ``build_llama(name, seed, dtype)``.

>>> save_random_llama("llama-2-7b", "/tmp/llama-7b", torch.bfloat16)   # doctest: +SKIP
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from fastpipes.llama.hf_dir import transformers_version
from fastpipes.llama.pipeline import llama_config
from fastpipes.pipelines.base import seeded_generator

INDEX = "model.safetensors.index.json"


def _plan(shapes: dict[str, tuple[int, ...]], itemsize: int, shard_bytes: int
          ) -> list[list[str]]:
    """Parameter names grouped, in order, into shards of at most `shard_bytes` (a larger
    tensor gets a shard of its own)."""
    shards, size = [[]], 0
    for name, shape in shapes.items():
        n = itemsize * torch.Size(shape).numel()
        if shards[-1] and size + n > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += n
    return shards


def _draw(shape: tuple[int, ...], dtype: torch.dtype, g: torch.Generator) -> torch.Tensor:
    """build_llama's initialisation of one parameter: norms 1, the rest N(0, 0.02)."""
    t = torch.empty(shape, dtype=dtype)
    return t.fill_(1.0) if t.dim() == 1 else t.normal_(0.0, 0.02, generator=g)


def save_random_llama(name: str, path: str | Path, dtype: torch.dtype = torch.bfloat16,
                      seed: int = 0, shard_bytes: int = 2 * 2**30) -> Path:
    """Write the named shape (see :data:`~fastpipes.llama.pipeline.LLAMA_SHAPES`) with
    :func:`build_llama`'s seeded random weights to `path` as save_pretrained would
    (config.json, generation_config.json, safetensors shards and their index), holding at
    most one shard of tensors at a time. config.json is written last: a directory whose
    writing was interrupted is refused by the loaders ("no config.json")."""
    from safetensors.torch import save_file
    from transformers import GenerationConfig, LlamaForCausalLM

    config = llama_config(name)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    model.tie_weights()  # a tied lm_head is the embedding: one tensor, saved once
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}  # tied ones once
    shards = _plan(shapes, dtype.itemsize, shard_bytes)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    g = seeded_generator(seed)
    weight_map, total = {}, 0
    for i, names in enumerate(shards):
        file = (f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" if len(shards) > 1
                else "model.safetensors")
        tensors = {n: _draw(shapes[n], dtype, g) for n in names}
        save_file(tensors, str(path / file), metadata={"format": "pt"})
        total += sum(t.numel() * t.element_size() for t in tensors.values())
        weight_map.update(dict.fromkeys(names, file))
        del tensors  # before the next shard is drawn
    if len(shards) > 1:
        (path / INDEX).write_text(json.dumps({"metadata": {"total_size": total},
                                              "weight_map": weight_map}, indent=2))
    generation = GenerationConfig.from_model_config(config)
    generation.pad_token_id = config.eos_token_id  # as build_llama sets it
    generation.save_pretrained(str(path))
    setattr(config, "dtype" if transformers_version() >= (4, 56) else "torch_dtype", dtype)
    config.save_pretrained(str(path))
    return path


__all__ = ["save_random_llama"]
