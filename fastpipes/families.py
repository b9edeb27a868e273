"""The model families fastpipes knows, one folder each, registered here in this order (the
order of ``fastpipes bench --help``, ``run --help`` and of the families a recipe may name).
Registering a family's description (its folder's ``FAMILY``) registers its recipe family name
and components, its adapter (so :func:`find_adapter` recognises its pipelines) and its bench
and run sub-commands.

Adding a family: one folder and one line here (docs/adding-a-family.md).
"""
from fastpipes import generic, llama, sam, sdxl
from fastpipes.family import FAMILIES, register_family
from fastpipes.pipelines.base import ADAPTERS, Adapter, AttentionSite, find_adapter

for _family in (sam.FAMILY, sdxl.FAMILY, llama.FAMILY, generic.FAMILY):
    register_family(_family)

__all__ = ["ADAPTERS", "Adapter", "AttentionSite", "FAMILIES", "find_adapter"]
