"""Load a Hugging Face causal-LM directory straight into weight-only quantized layers.

``from_pretrained`` followed by the quantize pass holds the whole FP32 model, then the
quantized copy beside it (the 1B shape peaked at 5-7 GB). Here the model is built on the
meta device and materialised one tensor at a time, read from the safetensors files with
plain reads (no memory map: a mapped file's touched pages count in the process's RSS until
it is closed); each targeted Linear is quantized as soon as its FP32 weight is read, and
that weight is dropped before the next is read. The quantized layers can be saved (the same
file format and fingerprint check as the quantize pass's ``cache_dir``) and the next start
reads them instead of quantizing: as the kernels run them (int4 already packed), layer by
layer with plain reads into the layers' own buffers, so a warm start neither packs nor maps.

The model carries what was done (``model._fastpipes_quantized_at_load``); the quantize
pass of a matching recipe then records the layers as quantized at load and leaves them.

>>> model = load_quantized_causal_lm("/path/to/hf-dir", {"dtype": "int4"})   # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from fastpipes.cache import open_part
from fastpipes.errors import CacheError, InputError
from fastpipes.llama.hf_dir import _list, check_model_dir
from fastpipes.kernels.woq import int4_packing
from fastpipes.passes.quantize import (FILE_FORMAT, QUANTIZED_AT_LOAD, QuantizeConfig,
                                       _set_module, kernel_skips,
                                       load_quantized, quantize_linear, resolve_act_dtype,
                                       save_quantized, select_linears)
from fastpipes.recipe.load import load_recipe
from fastpipes.tensorfile import TensorFile

ATTR = QUANTIZED_AT_LOAD


class TensorIndex:
    """Where each tensor of a model directory's *.safetensors lies (read from the headers);
    :meth:`read` copies one tensor into fresh memory with plain reads."""

    def __init__(self, path: Path):
        self.files = sorted(path.glob("*.safetensors"))
        self.entries: dict[str, TensorFile] = {}
        for file in self.files:
            tf = TensorFile(file)
            self.entries.update(dict.fromkeys(tf.entries, tf))

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def read(self, name: str) -> torch.Tensor:
        return self.entries[name].read(name)

    def key(self) -> str:
        """What identifies these weights cheaply: every file's header, size and mtime."""
        h = hashlib.sha256()
        for file in self.files:
            st = file.stat()
            h.update(f"{file.name}:{st.st_size}:{st.st_mtime_ns}".encode())
            with open(file, "rb") as f:
                h.update(f.read(8 + int.from_bytes(f.read(8), "little")))
        return h.hexdigest()[:16]


def _source_name(model: nn.Module, name: str, index: TensorIndex) -> str:
    """The checkpoint key holding parameter `name` (a tied lm_head reads the embedding)."""
    if name in index:
        return name
    head, emb = model.get_output_embeddings(), model.get_input_embeddings()
    if getattr(model.config, "tie_word_embeddings", False) and head is not None and \
            name.endswith("weight") and model.get_submodule(name.rpartition(".")[0]) is head:
        for n, m in model.named_modules():
            if m is emb:
                return f"{n}.weight"
    return name


def _materialize(model: nn.Module, index: TensorIndex, dtype: torch.dtype, read,
                 skip: set[str]) -> None:
    """Every parameter still on meta, outside the modules named in `skip`, read from the
    checkpoint (cast to `dtype`)."""
    missing, done = [], {}
    for mod_name, mod in list(model.named_modules()):
        if mod_name in skip:
            continue
        for leaf, p in list(mod.named_parameters(recurse=False)):
            if not p.is_meta:
                continue
            name = f"{mod_name}.{leaf}" if mod_name else leaf
            src = _source_name(model, name, index)
            if src not in index:
                missing.append(name)
                continue
            if src not in done:  # tied parameters stay one tensor
                done[src] = nn.Parameter(read(src).to(dtype), requires_grad=False)
            setattr(mod, leaf, done[src])
    if missing:
        raise InputError(f"the checkpoint lacks {len(missing)} weight(s) the model needs (they "
                         f"would be random): {_list(missing)}")


def _rebuild_buffers(model: nn.Module) -> None:
    """Buffers computed at construction (RoPE tables) were made on meta: make them again."""
    for name, mod in list(model.named_modules()):
        if any(b.is_meta for b in mod.buffers(recurse=False)):
            try:
                fresh = type(mod)(config=model.config)
            except TypeError as e:
                raise InputError(f"{type(mod).__name__} ({name}) has buffers computed at "
                                 "construction that this loader cannot rebuild") from e
            _set_module(model, name, fresh)


def _quantize_from_checkpoint(model, linears, index, cfg, dtype, act, read) -> None:
    loaded = {n: p for n, p in model.named_parameters() if not p.is_meta}  # a tied embedding
    for name, lin in linears.items():
        src = _source_name(model, f"{name}.weight", index)
        weight = loaded.get(src)
        lin.weight = nn.Parameter(read(src) if weight is None else weight, requires_grad=False)
        if lin.bias is not None:
            lin.bias = nn.Parameter(read(f"{name}.bias"), requires_grad=False)
        _set_module(model, name, quantize_linear(lin, dtype, cfg.group_size, act))
        lin.weight = lin.bias = None  # the FP32 copy goes now, before the next layer is read


def _config(quantize: QuantizeConfig | Mapping[str, Any]) -> QuantizeConfig:
    if isinstance(quantize, QuantizeConfig):
        return quantize
    return load_recipe({"name": "load", "quantize": dict(quantize)}).section("quantize")


def _default_cache() -> Path | None:
    """The cache's "weights" part, or None (no cache) when it cannot be used or trusted."""
    try:
        return open_part("weights")
    except CacheError:
        return None


def weight_only(quantize: QuantizeConfig | None) -> bool:
    """Whether `quantize` is a section this loader can apply (weight-only, on CPU)."""
    return quantize is not None and quantize.enabled and quantize.mode.value == "weight_only"


def load_quantized_causal_lm(path: str | Path, quantize: QuantizeConfig | Mapping[str, Any],
                             dtype: torch.dtype = torch.float32,
                             cache_dir: str | Path | None = None, read=None) -> nn.Module:
    """A *ForCausalLM from `path` (a save_pretrained directory) whose Linear layers `quantize`
    (a quantize section: weight_only int8 / int4) targets are quantized while loading; the
    rest in `dtype`. `cache_dir` (else the section's own) keeps the quantized layers."""
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    path = Path(path)
    check_model_dir(path)
    cfg = _config(quantize)
    if not weight_only(cfg):
        raise InputError("loading quantized needs a weight_only quantize section (int8 or int4)")
    index = TensorIndex(path)
    read = read or index.read
    config = AutoConfig.from_pretrained(str(path))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    dt, act = cfg.dtype.value, resolve_act_dtype(cfg.act_dtype)
    targeted = select_linears(model, cfg)
    skipped = kernel_skips(targeted, dt)
    linears = {n: m for n, m in targeted.items() if n not in skipped}
    cache_dir = cache_dir or cfg.cache_dir or _default_cache()
    packing = int4_packing() if dt == "int4" else ""  # packed int4 is read only where it fits
    key = hashlib.sha256(f"{FILE_FORMAT}/{dt}/{cfg.group_size}/{act}/{torch.__version__}/"
                         f"{packing}/{index.key()}/{sorted(linears)}".encode()).hexdigest()[:16]
    cache = Path(cache_dir) / f"load-{dt}-{key}.safetensors" if cache_dir else None
    how = "quantized while loading"
    # the parameters that stay (embeddings, norms, layers left in FP32) first: a tied lm_head
    # is then quantized from the embedding already in memory, not from a second copy
    _materialize(model, index, dtype, read, skip=set(linears))
    try:
        if cache is None or not cache.exists():
            raise FileNotFoundError
        load_quantized(model, cache, fingerprint_key=key)
        how = f"loaded from {cache}"
    except (FileNotFoundError, InputError) as e:
        if isinstance(e, InputError):
            how += f" (the cache file was not used: {e})"
        _quantize_from_checkpoint(model, linears, index, cfg, dt, act, read)
        if cache is not None:
            try:
                save_quantized(model, cache, key)
                how += f", saved to {cache}"
            except OSError as err:
                how += f" (not saved to {cache}: {err})"
    _rebuild_buffers(model)
    if (path / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(str(path))
    setattr(model, ATTR, {"dtype": dt, "group_size": cfg.group_size, "act_dtype": act,
                          "layers": sorted(linears), "skipped": skipped, "how": how,
                          "path": str(path), "cache": str(cache) if cache else None})
    return model.eval()


__all__ = ["load_quantized_causal_lm", "TensorIndex", "weight_only", "ATTR"]
