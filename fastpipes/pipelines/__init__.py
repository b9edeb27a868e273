"""Pipeline adapters. Importing this package registers every adapter."""
from fastpipes.pipelines import generic, llama, sam, sdxl  # noqa: F401
from fastpipes.pipelines.base import ADAPTERS, Adapter, AttentionSite, find_adapter

__all__ = ["ADAPTERS", "Adapter", "AttentionSite", "find_adapter"]
