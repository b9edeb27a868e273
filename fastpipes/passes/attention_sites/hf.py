"""Attention sites of kind "hf": transformers models with a switchable attn_implementation.

transformers dispatches attention through ``config._attn_implementation``; the
public ``model.set_attn_implementation`` switches it for the model and its sub-models;
where it is missing (4.51), setting the config attribute does the same.

- ``sdpa``: ``"sdpa"``: transformers calls ``F.scaled_dot_product_attention`` (PyTorch's
  fused CPU flash kernel where it applies).
- ``math``: ``"eager"``: transformers' own matmul-softmax-matmul reference path. It is the
  reference, not SDPA restricted to the math kernel (that would need a context around every
  call, which transformers does not offer).
- ``ipex``: not offered for transformers models here (the preflight refuses it); use the
  ipex pass.
"""
from __future__ import annotations

from fastpipes.passes.attention_sites import SITE_HANDLERS

_IMPL = {"sdpa": "sdpa", "math": "eager"}


def apply_hf(ctx, site, cfg) -> str:
    backend = getattr(cfg.backend, "value", cfg.backend)
    model = site.owner
    before = getattr(model.config, "_attn_implementation", None)
    # the config is an adapter state object: restored if a later pass fails
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(_IMPL[backend])
    else:  # transformers 4.51 has no setter: attention reads the shared config at every call
        model.config._attn_implementation = _IMPL[backend]
    after = model.config._attn_implementation
    return f"attn_implementation {before!r} -> {after!r}"


SITE_HANDLERS.add("hf", apply_hf)
