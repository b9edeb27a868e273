"""Attention-site handlers, one module per kind of site.

A handler is ``handler(ctx, site, cfg) -> str``: it rewrites the attention of `site`
(an AttentionSite) for `cfg.backend` and returns a one-line description of the change.
Library imports stay inside handlers, so this package needs only torch.
"""
from __future__ import annotations

from fastpipes.registry import Registry

SITE_HANDLERS: Registry = Registry("attention site kind")

from fastpipes.passes.attention_sites import diffusers  # noqa: E402,F401  (registers "diffusers")
from fastpipes.passes.attention_sites import hf  # noqa: E402,F401  (registers kind "hf")
from fastpipes.passes.attention_sites import sam  # noqa: E402,F401  (registers "sam_relpos")
