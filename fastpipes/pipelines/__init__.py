"""What every family's pipeline support builds on: the :class:`Adapter` contract, its
registry and the fidelity helpers (``base``). The families themselves live in their own
folders; :mod:`fastpipes.families` imports them all."""
from fastpipes.pipelines.base import ADAPTERS, Adapter, AttentionSite, find_adapter

__all__ = ["ADAPTERS", "Adapter", "AttentionSite", "find_adapter"]
