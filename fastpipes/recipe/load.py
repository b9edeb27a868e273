"""Find, read, inherit, override and validate recipes.

Resolution of a recipe *spec*:
  1. a :class:`Recipe` or a mapping is used as is;
  2. a path to an existing file (or anything ending in .yaml/.yml) is read from disk;
  3. a bare name is looked up in each directory of ``FASTPIPES_RECIPE_PATH``
     (``os.pathsep``-separated, read at call time), then among the built-in recipes.

``base:`` names a recipe the same way (a relative path is relative to the file naming it).
Each file is validated on its own so every problem names its file; overrides are
validated as ``<overrides>``; only a recipe with no problems at all is built.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fastpipes.errors import Problem, RecipeError, RecipeNotFoundError
from fastpipes.recipe.read import read_yaml, safe_load
from fastpipes.recipe.schema import GENERIC, HEADER_KEYS, SECTIONS, RecipeHeader, Recipe
from fastpipes.recipe.validate import (INTERPOLATION, build, build_section,
                                       check_components, check_interpolation, check_workload,
                                       check_recipe_mapping, check_size, not_a_recipe)
from fastpipes.registry import did_you_mean

ENV_PATH = "FASTPIPES_RECIPE_PATH"
OVERRIDES = "<overrides>"


def builtin_dir() -> Path:
    """Directory holding the built-in recipes (inside the installed package)."""
    try:
        path = Path(str(resources.files("fastpipes") / "recipes"))
        if path.is_dir():
            return path
    except (ModuleNotFoundError, TypeError):
        pass
    # running from a source checkout that was not installed
    return Path(__file__).resolve().parents[2] / "recipes"


def shown_source(source: str | None) -> str | None:
    """A recipe's file as results record it: ``recipes/x.yaml`` for a built-in one, so that
    results do not carry the path of the machine they ran on; other files as given."""
    if not source:
        return source
    try:
        return f"recipes/{Path(source).resolve().relative_to(builtin_dir().resolve())}"
    except (ValueError, OSError):
        return source


def search_dirs() -> list[Path]:
    """User directories from FASTPIPES_RECIPE_PATH, then the built-in directory."""
    env = os.environ.get(ENV_PATH, "")
    dirs = [Path(p).expanduser() for p in env.split(os.pathsep) if p.strip()]
    return dirs + [builtin_dir()]


def available() -> dict[str, Path]:
    """Every recipe name that resolves, mapped to its file (user dirs shadow built-ins)."""
    found: dict[str, Path] = {}
    for d in search_dirs():
        if d.is_dir():
            for f in sorted(list(d.glob("*.yaml")) + list(d.glob("*.yml"))):
                found.setdefault(f.stem, f)
    return found


def _looks_like_path(spec: str) -> bool:
    return spec.endswith((".yaml", ".yml")) or os.sep in spec or "/" in spec


def is_path_spec(spec: str) -> bool:
    """Whether :func:`resolve` reads `spec` (given outside any file) as a path relative to
    the working directory rather than as a recipe name."""
    return _looks_like_path(spec) or Path(spec).is_file()


def resolve(spec: str, relative_to: Path | None = None) -> Path:
    """The file a recipe name or path refers to; RecipeNotFoundError listing names if none."""
    if _looks_like_path(spec) or (relative_to is None and Path(spec).is_file()):
        path = Path(spec).expanduser()
        if not path.is_absolute() and relative_to is not None:
            path = relative_to / path
        if path.is_file():
            return path
        raise RecipeNotFoundError(f"recipe file not found: {path}")
    names = available()
    if spec in names:
        return names[spec]
    raise RecipeNotFoundError(
        f"unknown recipe {spec!r}{did_you_mean(spec, names)}; "
        f"built-in and FASTPIPES_RECIPE_PATH recipes: {', '.join(sorted(names))}"
    )


def _parse_override(item: str) -> tuple[dict, list[Problem]]:
    """One ``key.path=value`` -> (nested dict, problems). The value is YAML (typed like
    the files) and is bounded like a file before OmegaConf builds anything from it."""
    key, _, value = item.partition("=")
    key = key.strip()
    if INTERPOLATION in item:
        return {}, [Problem(OVERRIDES, key, f"interpolation is not allowed: {item!r}",
                            "plain values; nothing in a recipe is resolved")]
    try:
        problems = check_size(safe_load(value, OVERRIDES), OVERRIDES)
    except RecipeError as e:
        problems = [Problem(OVERRIDES, key, f"cannot parse value {value!r}: "
                                            f"{e.problems[0].message}")]
    if problems:
        return {}, [Problem(OVERRIDES, key, p.message, p.allowed) for p in problems]
    try:
        return OmegaConf.to_container(OmegaConf.from_dotlist([item]), resolve=False), []
    except (OmegaConfBaseException, yaml.YAMLError, ValueError, RecursionError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        return {}, [Problem(OVERRIDES, key, f"cannot parse override {item!r}: {reason}")]


def _clash(item: str, earlier: dict[tuple[str, ...], str]) -> Problem | None:
    """A Problem if override `item` sets a key an earlier one set, or a key inside or
    around one (``compile=3`` then ``compile.mode=default``): merged, one would silently
    drop the other. Records `item`'s key in `earlier` otherwise."""
    key = item.split("=", 1)[0].strip()
    path = tuple(part.strip() for part in key.split("."))
    for other, before in earlier.items():
        n = min(len(path), len(other))
        if path[:n] == other[:n]:
            how = ("sets the same key as" if path == other else
                   "sets a key inside what was set by" if len(path) > len(other) else
                   "replaces what holds the key set by")
            return Problem(OVERRIDES, key, f"{item!r} {how} the earlier override {before!r}; "
                                           "one of them would be silently dropped",
                           "each key set once (give one override per key, or one for the "
                           "whole section)")
    earlier[path] = item
    return None


def parse_overrides(
    overrides: str | Iterable[str] | Mapping[str, Any] | None,
) -> tuple[dict, list[Problem]]:
    """Dotlist (``["compile.mode=max-autotune"]``, or one such string) or nested mapping
    -> (nested dict, problems)."""
    if not overrides:
        return {}, []
    if isinstance(overrides, Mapping):
        raw = dict(overrides)
        if isinstance(overrides, DictConfig):
            raw = OmegaConf.to_container(overrides, resolve=False)
        problems = check_size(raw, OVERRIDES) or check_interpolation(raw, OVERRIDES)
        if problems:
            return {}, problems
        try:  # nested mappings of any kind -> plain dicts
            return OmegaConf.to_container(OmegaConf.create(raw), resolve=False), []
        except OmegaConfBaseException as e:
            return {}, [Problem(OVERRIDES, "", f"cannot read overrides: {e}")]
    if isinstance(overrides, str):
        overrides = [overrides]  # one override, not a list of one-character ones
    problems: list[Problem] = []
    merged = OmegaConf.create({})
    earlier: dict[tuple[str, ...], str] = {}  # key path -> the override that set it
    for item in overrides:
        if not isinstance(item, str):
            problems.append(Problem(OVERRIDES, "", f"an override must be a string, got "
                                                   f"{item!r}", "key.path=value"))
        elif "=" not in item or not item.split("=", 1)[0].strip():
            problems.append(Problem(OVERRIDES, item, "an override must look like key.path=value"))
        else:
            clash = _clash(item, earlier)
            if clash:
                problems.append(clash)
                continue
            over, bad = _parse_override(item)
            problems += bad
            try:
                merged = OmegaConf.merge(merged, over)
            except OmegaConfBaseException as e:  # e.g. compile=3 then compile.mode=default
                problems.append(Problem(OVERRIDES, item.split("=", 1)[0].strip(),
                                        f"conflicts with an earlier override: {e}"))
    return OmegaConf.to_container(merged, resolve=False), problems


@dataclass
class _Layer:
    file: str
    raw: dict
    is_file: bool = True  # a file must do something (a mapping may be a resolved recipe)


def _is_empty(raw: Any) -> bool:
    """Neither a pass section nor a base: a recipe file that would do nothing. (Checked on
    files only: a mapping may be the resolved form of a recipe whose file dropped every
    section of its base, as bench workers receive it.)"""
    return isinstance(raw, dict) and raw.get("base") is None and not any(
        k not in HEADER_KEYS and v is not None for k, v in raw.items())


def _set_by(key: str, sources: list[tuple[str, Any]], default: str) -> str:
    """The last of `sources` (file, raw) that sets dotted `key`: where a value a cross-field
    check refused came from (an option name may itself hold dots, e.g. cpp.threads)."""
    for file, raw in reversed(sources):
        node, rest = raw, key
        while isinstance(node, dict) and rest:
            if rest in node:
                return file
            head, _, rest = rest.partition(".")
            node = node.get(head)
    return default


def _read_chain(path: Path) -> list[_Layer]:
    """The file at `path` and its bases, root first. Cycles and missing bases are errors."""
    chain: list[_Layer] = []
    seen: list[Path] = []
    while True:
        real = path.resolve()
        if real in seen:
            names = " -> ".join(str(p) for p in seen + [real])
            raise RecipeError(f"recipe inheritance cycle: {names}")
        seen.append(real)
        raw = read_yaml(path)
        chain.append(_Layer(str(path), raw))
        base = raw.get("base") if isinstance(raw, dict) else None
        if base is None:
            break
        if not isinstance(base, str):
            break  # reported by validation as a wrong type
        try:
            path = resolve(base, relative_to=path.parent)
        except RecipeNotFoundError as e:
            names = " -> ".join(str(p) for p in seen)
            raise RecipeNotFoundError(
                f"{e.problems[0].message} (base of {path}; chain: {names} -> {base})"
            ) from None
    return list(reversed(chain))


def load_recipe(
    spec: "str | Path | Recipe | Mapping[str, Any]",
    overrides: Iterable[str] | Mapping[str, Any] | None = None,
) -> Recipe:
    """Load, inherit, override and validate a recipe; raise one RecipeError listing all problems.

    >>> r = load_recipe("sam_fp32_fast", ["compile.mode=max-autotune"])  # doctest: +SKIP
    >>> r.section("compile").mode                                        # doctest: +SKIP
    <CompileMode.max_autotune: 'max-autotune'>
    """
    if isinstance(spec, Recipe) and not overrides:
        return spec
    layers = _layers(spec)
    over, problems = parse_overrides(overrides)
    problems = _layer_problems(layers) + problems + _override_problems(over)
    if problems:  # the sections that are well typed everywhere still get their value checks
        problems += _clean_section_checks(layers, over, problems)
        raise RecipeError(problems, recipe=_guess_name(spec, layers))

    data = _merged(spec, layers, over)
    leaf = layers[-1].file
    data.pop("base", None)
    header = build(RecipeHeader, {k: v for k, v in data.items() if k in HEADER_KEYS})
    name = header.name or (Path(leaf).stem if leaf.endswith((".yaml", ".yml")) else "custom")
    data["name"] = name
    sections = {k: build_section(k, v or {}) for k, v in data.items()
                if k not in HEADER_KEYS and v is not None}
    sources = [(layer.file, layer.raw) for layer in layers] + [(OVERRIDES, over)]
    problems = [Problem(_set_by(f"{k}.{key}", sources, leaf), f"{k}.{key}", message, allowed)
                for k, sec in sections.items() for key, message, allowed in sec.check()]
    problems += [Problem(_set_by(key.split("[")[0], sources, leaf), key, message, allowed)
                 for key, message, allowed in check_components(header.family, sections)
                + check_workload(header.family, header.workload)]
    if problems:
        raise RecipeError(problems, recipe=name)
    return Recipe(name=name, description=header.description, family=header.family,
                  requires=header.requires, low_memory=header.low_memory,
                  workload=header.workload, sections=sections,
                  source=leaf, chain=tuple(layer.file for layer in reversed(layers)), raw=data)


def _layers(spec: "str | Path | Recipe | Mapping[str, Any]") -> list[_Layer]:
    """What a recipe is made of, its farthest base first."""
    if isinstance(spec, Recipe):
        return [_Layer(spec.source, dict(spec.raw), is_file=False)]
    if isinstance(spec, Mapping):
        layers = [_Layer("<api>", dict(spec), is_file=False)]
        if isinstance(spec.get("base"), str):
            layers = _read_chain(resolve(spec["base"])) + layers
        return layers
    return _read_chain(resolve(str(spec)))


def _layer_problems(layers: list[_Layer]) -> list[Problem]:
    """Each layer's shape, size and types (a file that is no recipe at all: only that)."""
    problems: list[Problem] = []
    for layer in layers:
        alien = not_a_recipe(layer.raw, layer.file) if layer.is_file else []
        size = alien or check_size(layer.raw, layer.file)
        problems += size or check_recipe_mapping(layer.raw, layer.file)
        if not size and layer.is_file and _is_empty(layer.raw):
            problems.append(Problem(layer.file, "", "empty recipe: it sets no pass section "
                                                    "and no base",
                                    "at least one section (e.g. attention: {}) or base: NAME"))
    return problems


def _override_problems(over: Any) -> list[Problem]:
    problems = check_recipe_mapping(over, OVERRIDES) if over else []
    if isinstance(over, dict) and "base" in over:
        problems.append(Problem(OVERRIDES, "base", "the base of a recipe cannot be overridden",
                                "a recipe file that inherits it: fastpipes recipes new NAME "
                                "--from BASE"))
    return problems


def _merged(spec: Any, layers: list[_Layer], over: Any) -> dict:
    """The layers and the overrides merged, later ones winning (plain data, not resolved)."""
    raws = [layer.raw for layer in layers] + ([over] if over else [])
    try:  # every value is plain data by now: nothing to resolve
        merged = OmegaConf.create({})
        for raw in raws:
            merged = OmegaConf.merge(merged, OmegaConf.create(raw))
        return OmegaConf.to_container(merged, resolve=False)
    except OmegaConfBaseException as e:
        raise RecipeError([Problem(layers[-1].file, "", f"cannot merge: {e}")],
                          recipe=_guess_name(spec, layers)) from None


def _clean_section_checks(layers: list[_Layer], over: Any,
                          problems: list[Problem]) -> list[Problem]:
    """The value and component checks that `problems` did not already make impossible, so
    one run reports a bad ``attention.block_size`` beside a wrong type elsewhere, even in
    the same section (issue #27). A section whose fields have problems is checked without
    those fields (their defaults stand in) and its checks on them are left out; a section
    that is itself the wrong type is skipped. Nothing when a problem concerns a whole file
    (its sections cannot be trusted)."""
    raws = [layer.raw for layer in layers] + ([over] if over else [])
    if any(not p.key for p in problems) or not all(isinstance(r, dict) for r in raws):
        return []
    bad: dict[str, set[str]] = {}  # section -> its fields with problems ('' = the section)
    for p in problems:
        section, _, rest = p.key.partition(".")
        bad.setdefault(section.split("[")[0], set()).add(rest.split(".")[0].split("[")[0])
    sections = {}
    for k, v in _merged_sections(raws, bad).items():
        try:
            sections[k] = build_section(k, v or {})
        except Exception:  # noqa: BLE001  (only more problems to report; never a crash)
            continue
    sources = [(layer.file, layer.raw) for layer in layers] + [(OVERRIDES, over)]
    leaf = layers[-1].file
    out = [Problem(_set_by(f"{k}.{key}", sources, leaf), f"{k}.{key}", message, allowed)
           for k, sec in sections.items() for key, message, allowed in sec.check()
           if key.split(".")[0] not in bad.get(k, ())]
    families = [r["family"] for r in raws if "family" in r]
    if "family" not in bad:  # a family with a problem cannot say what its components are
        family = families[-1] if families else GENERIC
        out += [Problem(_set_by(key.split("[")[0], sources, leaf), key, message, allowed)
                for key, message, allowed in check_components(family, sections)]
    return out


def _merged_sections(raws: list[Any], bad: dict[str, set[str]]) -> dict[str, Any]:
    """The pass sections of `raws` merged (base first, as load_recipe merges them), less the
    fields and sections that `bad` names; a section set to null is left out."""
    merged: dict[str, Any] = {}
    for raw in raws:
        for k, v in raw.items():
            if k not in SECTIONS or "" in bad.get(k, ()):
                continue
            if isinstance(v, dict):
                v = {f: x for f, x in v.items() if f not in bad.get(k, ())}
            if v is None or merged.get(k) is None:
                merged[k] = v  # null removes an inherited section
            else:
                merged[k] = OmegaConf.to_container(OmegaConf.merge(merged[k], v), resolve=False)
    return {k: v for k, v in merged.items() if v is not None}


def _guess_name(spec: Any, layers: list[_Layer]) -> str:
    raw = layers[-1].raw if layers else {}
    if isinstance(raw, dict) and isinstance(raw.get("name"), str):
        return raw["name"]
    return str(spec) if isinstance(spec, (str, Path)) else "custom"
