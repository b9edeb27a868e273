"""Check a raw recipe mapping against the typed schema, collecting *every* problem.

Used on each file of an inheritance chain (so each problem names the file it is in) and
on the command-line overrides. Builds frozen dataclasses from a mapping known to be valid.

Recipes are data. Before any schema check, :func:`check_size` bounds what a raw value may
be (nesting depth, number of values once YAML aliases are expanded, no value containing
itself), so no later step can be made to run for minutes or recurse without end; and
:func:`check_recipe_mapping` refuses OmegaConf interpolation (``${...}``) anywhere: nothing
in a recipe is resolved, looked up or run, so neither ``${oc.env:SECRET}`` nor a resolver
the host process registered can be reached from a recipe string.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from enum import Enum
from typing import Any, Union

from fastpipes.bounds import TYPE_WORDS, fits_type
from fastpipes.errors import Problem
from fastpipes.recipe.schema import (FAMILY_COMPONENTS, FAMILY_WORKLOADS, HEADER_KEYS, SECTIONS,
                                     RecipeHeader, Section)
from fastpipes.registry import did_you_mean


def type_name(tp: Any) -> str:
    """A short human name of a schema type, for error messages."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        inner = " or ".join(type_name(a) for a in args)
        return f"{inner} or null" if len(args) < len(typing.get_args(tp)) else inner
    if origin is list:
        return f"list of {type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "mapping"
    if isinstance(tp, type) and issubclass(tp, Enum):
        return "one of: " + ", ".join(m.value for m in tp)
    if dataclasses.is_dataclass(tp):
        return "mapping with keys: " + ", ".join(f.name for f in dataclasses.fields(tp))
    return TYPE_WORDS.get(tp, getattr(tp, "__name__", str(tp)))


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


MAX_DEPTH = 32  # nested mappings/lists; the built-in recipes need 3
MAX_VALUES = 10_000  # values once aliases are expanded; a built-in recipe has under 100
INTERPOLATION = "${"


class _TooBig(Exception):
    def __init__(self, key: str, message: str, allowed: str):
        self.problem = (key if len(key) <= 60 else key[:57] + "...", message, allowed)


def check_size(raw: Any, file: str) -> list[Problem]:
    """At most one Problem: `raw` is nested too deeply, too large once YAML aliases are
    expanded (a "billion laughs" document), or contains itself.

    Runs in time linear in the *distinct* objects, whatever aliases share, so a few hundred
    bytes of aliases that expand to billions of values are refused at once.
    """
    try:
        _count(raw, "", 0, {}, set())
    except _TooBig as e:
        return [Problem(file, *e.problem)]
    return []


def _count(value: Any, key: str, depth: int, memo: dict[int, int], path: set[int]) -> int:
    """Values in `value` with aliases expanded; raises _TooBig past the limits."""
    if not isinstance(value, (dict, list, tuple)):
        return 1
    ident = id(value)
    if ident in memo:  # an alias of a value already counted
        return memo[ident]
    if ident in path:
        raise _TooBig(key, "a value that contains itself (a recursive YAML alias)",
                      "plain nested values")
    if depth >= MAX_DEPTH:
        raise _TooBig(key, f"nested more than {MAX_DEPTH} levels deep",
                      f"at most {MAX_DEPTH} levels of mappings and lists")
    path.add(ident)
    items = value.items() if isinstance(value, dict) else enumerate(value)
    total = 1
    for k, v in items:
        sub = f"{key}.{k}" if isinstance(value, dict) else f"{key}[{k}]"
        total += _count(v, sub.lstrip("."), depth + 1, memo, path)
        if total > MAX_VALUES:
            raise _TooBig(key, f"more than {MAX_VALUES} values once YAML aliases (*name) "
                               "are expanded", f"at most {MAX_VALUES} values")
    path.discard(ident)
    memo[ident] = total
    return total


def check_interpolation(raw: Any, file: str) -> list[Problem]:
    """A Problem for each string holding ``${`` in `raw` (which :func:`check_size` passed):
    recipes get no interpolation at all."""
    out: list[Problem] = []
    _interpolations(raw, "", file, out)
    return out


def _interpolations(value: Any, key: str, file: str, out: list[Problem]) -> None:
    if isinstance(value, str):
        if INTERPOLATION in value:
            out.append(Problem(file, key, f"interpolation is not allowed: {_show(value)}",
                               "plain values; recipes are data and nothing in them is "
                               "resolved (write the value itself)"))
    elif isinstance(value, dict):
        for k, v in value.items():
            sub = f"{key}.{k}" if key else str(k)
            if INTERPOLATION in str(k):
                out.append(Problem(file, sub, "interpolation is not allowed in a key",
                                   "plain keys"))
            _interpolations(v, sub, file, out)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _interpolations(v, f"{key}[{i}]", file, out)


def _check(tp: Any, value: Any, key: str, file: str, out: list[Problem]) -> None:
    """Append a Problem to `out` for each way `value` does not fit type `tp`."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:
            return _check(non_none[0], value, key, file, out)
        if not any(not _problems(a, value, key, file) for a in non_none):
            out.append(Problem(file, key, f"wrong type: {_show(value)}", type_name(tp)))
        return
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            out.append(Problem(file, key, f"expected a mapping, got {_show(value)}", type_name(tp)))
            return
        check_mapping(tp, value, key, file, out)
        return
    if origin is list:
        if not isinstance(value, (list, tuple)):
            out.append(Problem(file, key, f"expected a list, got {_show(value)}", type_name(tp)))
            return
        (item_tp,) = typing.get_args(tp)
        for i, item in enumerate(value):
            _check(item_tp, item, f"{key}[{i}]", file, out)
        return
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            out.append(Problem(file, key, f"expected a mapping, got {_show(value)}", "mapping"))
        return
    if tp is Any:
        return
    if isinstance(tp, type) and issubclass(tp, Enum):
        allowed = [m.value for m in tp]
        if value not in allowed:
            hint = did_you_mean(value, allowed) if isinstance(value, str) else ""
            out.append(Problem(file, key, f"unknown value {_show(value)}{hint}", type_name(tp)))
        return
    assert tp in (bool, int, float, str), f"schema type {tp!r} is not supported by the validator"
    if not fits_type(value, tp):
        out.append(Problem(file, key, f"wrong type: {_show(value)}", type_name(tp)))


def _problems(tp: Any, value: Any, key: str, file: str) -> list[Problem]:
    out: list[Problem] = []
    _check(tp, value, key, file, out)
    return out


def check_mapping(cls: type, raw: dict, prefix: str, file: str, out: list[Problem]) -> None:
    """Check each key of `raw` against the fields of dataclass `cls`."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for k, v in raw.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in names:
            out.append(Problem(file, key, f"unknown key{did_you_mean(k, names)}", ", ".join(names)))
            continue
        _check(hints[k], v, key, file, out)


def check_recipe_mapping(raw: Any, file: str) -> list[Problem]:
    """Every problem of one recipe file's (or override set's) raw mapping, which
    :func:`check_size` passed."""
    if not isinstance(raw, dict):
        return not_a_recipe(raw, file)
    out = check_interpolation(raw, file)
    header = {k: v for k, v in raw.items() if k in HEADER_KEYS and k != "family"}
    check_mapping(RecipeHeader, header, "", file, out)
    if "family" in raw:
        check_family(raw["family"], file, out)
    allowed = list(HEADER_KEYS) + SECTIONS.names()
    for k, v in raw.items():
        if k in HEADER_KEYS:
            continue
        if k not in SECTIONS:
            hint = did_you_mean(k, allowed)
            out.append(Problem(file, str(k), f"unknown section{hint}", ", ".join(allowed)))
        elif v is not None:  # null removes a section inherited from a base
            _check(SECTIONS.get(k), v, str(k), file, out)
    return out


def check_family(value: Any, file: str, out: list[Problem]) -> None:
    """A Problem in `out` unless `value` names a registered family (FAMILY_COMPONENTS, filled
    by the family descriptions the way the passes fill SECTIONS)."""
    names = FAMILY_COMPONENTS.names()
    if not (isinstance(value, str) and value in names):
        hint = did_you_mean(value, names) if isinstance(value, str) else ""
        out.append(Problem(file, "family", f"unknown value {_show(value)}{hint}",
                           "one of: " + ", ".join(names)))


def check_components(family: str, sections: dict[str, Section]
                     ) -> list[tuple[str, str, str]]:
    """(key, message, allowed) for each component a section names that pipelines of
    `family` do not have (nothing for generic recipes, which fit any model)."""
    known = FAMILY_COMPONENTS.get(family) if family in FAMILY_COMPONENTS else None
    out = []
    for name, sec in sections.items() if known else ():
        for i, comp in enumerate(getattr(sec, "components", None) or []):
            if comp not in known:
                out.append((f"{name}.components[{i}]", f"unknown {family} component "
                            f"{_show(comp)}{did_you_mean(comp, known)}", ", ".join(known)))
    return out


def check_workload(family: str, workload: str | None) -> list[tuple[str, str, str]]:
    """(key, message, allowed) when `workload` is not one of `family`'s benchmark workloads
    (FAMILY_WORKLOADS, filled by the family descriptions)."""
    if workload is None:
        return []
    known = FAMILY_WORKLOADS.get(family) if family in FAMILY_WORKLOADS else ()
    if not known:
        return [("workload", f"{family} recipes have no benchmark workloads to choose from",
                 "leave workload out")]
    if workload not in known:
        return [("workload", f"unknown {family} workload {_show(workload)}"
                             f"{did_you_mean(workload, known)}", ", ".join(known))]
    return []


def what_a_recipe_is() -> str:
    return (f"a YAML mapping whose keys are recipe keys: {', '.join(HEADER_KEYS)} and pass "
            f"sections ({', '.join(SECTIONS.names())})")


def not_a_recipe(raw: Any, file: str) -> list[Problem]:
    """One Problem when what a file holds is not a recipe at all: not a mapping, or a
    mapping none of whose keys a recipe has. Nothing of the content is quoted: the file may
    be anything a path can name (``base: ../../etc/shadow``), and an error is printed."""
    if not isinstance(raw, dict):
        kind = {str: "text", list: "a list", int: "a number", float: "a number",
                bool: "a boolean"}.get(type(raw), "a single value")
        return [Problem(file, "", f"not a recipe: the file holds {kind}, not a mapping of "
                                  "keys (its content is not shown)", what_a_recipe_is())]
    if raw and not any(isinstance(k, str) and (k in HEADER_KEYS or k in SECTIONS) for k in raw):
        return [Problem(file, "", f"not a recipe: none of its {len(raw)} top-level keys is a "
                                  "recipe key (its content is not shown)", what_a_recipe_is())]
    return []


def build(cls: type, raw: dict) -> Any:
    """Construct dataclass `cls` from a mapping that passed :func:`check_mapping`."""
    hints = typing.get_type_hints(cls)
    kwargs = {k: _convert(hints[k], v) for k, v in raw.items()}
    return cls(**kwargs)


def _convert(tp: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            if arg is not type(None) and not _problems(arg, value, "", ""):
                return _convert(arg, value)
        return value
    if dataclasses.is_dataclass(tp):
        return build(tp, value)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        return [_convert(item_tp, v) for v in value]
    if origin is dict:
        return dict(value)
    if isinstance(tp, type) and issubclass(tp, Enum):
        return tp(value)
    if tp is float:
        return float(value)
    return value


def build_section(name: str, raw: dict) -> Section:
    return build(SECTIONS.get(name), raw)
