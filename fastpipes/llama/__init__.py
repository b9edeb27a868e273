"""transformers Llama: the builder and adapter (``pipeline``), loading local model directories
(``hf_dir``, ``quantized_load``), the reference models trained here (``reference``), the decode
benchmark (``bench``) and ``fastpipes run llama`` (``run``). :data:`FAMILY` describes it."""
from __future__ import annotations

from typing import Any

import torch

from fastpipes.family import BuildSpec, FamilyDescription
from fastpipes.llama.pipeline import LlamaAdapter, build_llama


def build(spec: BuildSpec) -> Any:
    """A ``LlamaForCausalLM``: a named shape (default llama-3.2-1b, or tiny at size tiny)
    with seeded random weights, a reference model trained here, or a local directory
    (quantized while it is read when `spec.quantize` is a weight-only section), on
    `spec.device`."""
    return build_llama(spec.model or ("tiny" if spec.size == "tiny" else "llama-3.2-1b"),
                       seed=spec.seed, dtype=getattr(torch, spec.dtype), device=spec.device,
                       quantize=spec.quantize)


FAMILY = FamilyDescription(
    name="llama", help="Llama (transformers generate): prefill + decode tokens",
    build=build, adapter=LlamaAdapter, components=("model",),
    bench="fastpipes.llama.bench:LlamaWorkload", run="fastpipes.llama.run:LlamaJob")
