"""The model families fastpipes knows, one folder each (``fastpipes/sam``, ``sdxl``, ``llama``,
``generic``). Importing this module registers every family's adapter, so
:func:`find_adapter` can recognise any pipeline fastpipes supports.

Adding a family: docs/adding-a-family.md.
"""
from fastpipes.generic import adapter as _generic  # noqa: F401  (registers)
from fastpipes.llama import pipeline as _llama  # noqa: F401
from fastpipes.pipelines.base import ADAPTERS, Adapter, AttentionSite, find_adapter
from fastpipes.sam import pipeline as _sam  # noqa: F401
from fastpipes.sdxl import pipeline as _sdxl  # noqa: F401

__all__ = ["ADAPTERS", "Adapter", "AttentionSite", "find_adapter"]
