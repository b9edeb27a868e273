"""Local Hugging Face model directories: checked before transformers reads them, and a
checkpoint that lacks weights is an error, not a model with random layers.

transformers' own behaviour, which these checks turn into clear errors: a missing tensor
is initialised randomly with only a logged note; a truncated or non-safetensors weight
file raises ``SafetensorError: Error while deserializing header: ...`` without the file's
name; a config.json that is not JSON raises OSError.

>>> model = load_causal_lm("/path/to/hf-dir", torch.float32)   # doctest: +SKIP
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn

from fastpipes.errors import InputError

EXPECTED = "a Hugging Face model directory (config.json + *.safetensors, as save_pretrained writes)"


def _list(names, limit: int = 8) -> str:
    names = sorted(names)
    more = f", and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def check_model_dir(path: str | Path) -> None:
    """Raise InputError naming the file and what was expected, unless `path` looks like a
    loadable model directory: a config.json that is a JSON object, and weight files whose
    safetensors headers read and describe no more bytes than the file has."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_dir():
        what = "a file" if path.is_file() else "not found"
        raise InputError(f"{path} is {what}; expected {EXPECTED}")
    config = path / "config.json"
    if not config.is_file():
        raise InputError(f"{path} has no config.json; expected {EXPECTED}")
    try:
        if not isinstance(json.loads(config.read_text()), dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"{config} is not a model config ({e}); expected the JSON object "
                         "save_pretrained writes") from e
    weights = sorted(path.glob("*.safetensors"))
    if not weights and not list(path.glob("*.bin")):
        raise InputError(f"{path} has no weights; expected model.safetensors (or shards "
                         "model-0000k-of-0000n.safetensors with their index)")
    for file in weights:
        try:
            with safe_open(str(file), framework="pt") as f:
                f.keys()
        except Exception as e:  # safetensors' errors name no file
            raise InputError(f"{file} is not a readable safetensors file ({e}): a text file, "
                             "truncated or damaged; expected the weights save_pretrained "
                             "writes") from e


def transformers_version() -> tuple[int, int]:
    """(major, minor) of the installed transformers."""
    import transformers

    major, minor = transformers.__version__.split(".")[:2]
    return int(major), int(minor)


def load_causal_lm(path: str | Path, dtype: torch.dtype = torch.float32) -> nn.Module:
    """``AutoModelForCausalLM.from_pretrained(path)`` after :func:`check_model_dir`; a
    checkpoint missing any weight the model needs is an InputError naming the keys."""
    from transformers import AutoModelForCausalLM

    check_model_dir(path)
    # `dtype` since transformers 4.56; before, it was `torch_dtype` (and `dtype` was ignored)
    key = "dtype" if transformers_version() >= (4, 56) else "torch_dtype"
    model, info = AutoModelForCausalLM.from_pretrained(str(path), **{key: dtype},
                                                        output_loading_info=True)
    missing = {str(k) for k in (info.get("missing_keys") or ())} | \
        {str(k) for k in (info.get("mismatched_keys") or ())}
    if missing or info.get("error_msgs"):
        raise InputError(f"{path}: the checkpoint lacks {len(missing)} weight(s) of "
                         f"{type(model).__name__} (they would be random): {_list(missing)}"
                         + (f"; {'; '.join(info['error_msgs'])}" if info.get("error_msgs") else "")
                         + "; expected every parameter in the directory's *.safetensors")
    return model
