"""Recipes: typed schema, loading with inheritance and overrides, and validation."""
from fastpipes.recipe.load import available, builtin_dir, load_recipe, resolve
from fastpipes.recipe.schema import (FAMILY_COMPONENTS, GENERIC, SECTIONS, AutoConfig, Device,
                                     PrecisionClass, Recipe, Requires, Section)

__all__ = ["FAMILY_COMPONENTS", "GENERIC", "SECTIONS", "AutoConfig", "Device", "PrecisionClass",
           "Recipe", "Requires", "Section", "available", "builtin_dir", "load_recipe", "resolve"]
