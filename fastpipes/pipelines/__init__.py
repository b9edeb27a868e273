"""Pipeline adapters. Importing this package registers every adapter."""
<<<<<<< HEAD
from fastpipes.pipelines import generic, sam  # noqa: F401
=======
from fastpipes.pipelines import generic, llama  # noqa: F401
>>>>>>> llama
from fastpipes.pipelines.base import ADAPTERS, Adapter, AttentionSite, find_adapter

__all__ = ["ADAPTERS", "Adapter", "AttentionSite", "find_adapter"]
