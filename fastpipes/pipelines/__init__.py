"""What every family's pipeline support builds on: the :class:`Adapter` contract and its
registry (``base``; the fidelity bars and verdict it uses are :mod:`fastpipes.fidelity`'s).
The families themselves live in their own folders; :mod:`fastpipes.families` imports them all."""
from fastpipes.pipelines.base import ADAPTERS, Adapter, AttentionSite, find_adapter

__all__ = ["ADAPTERS", "Adapter", "AttentionSite", "find_adapter"]
