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
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fastpipes.errors import Problem, RecipeError, RecipeNotFoundError
from fastpipes.recipe.schema import HEADER_KEYS, RecipeHeader, Recipe
from fastpipes.recipe.validate import build, build_section, check_recipe_mapping
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


def read_yaml(path: Path) -> Any:
    """Safe-load one YAML file; a syntax error names the file, line and column."""
    try:
        text = path.read_text()
    except OSError as e:
        raise RecipeError(f"cannot read recipe file {path}: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)  # safe: no tags, no object construction
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        raise RecipeError([Problem(str(path), "", f"malformed YAML at {where}: {e.problem}")])
    except yaml.YAMLError as e:
        raise RecipeError([Problem(str(path), "", f"malformed YAML: {e}")]) from None
    return {} if data is None else data


def parse_overrides(overrides: Iterable[str] | Mapping[str, Any] | None) -> tuple[dict, list[Problem]]:
    """Dotlist (``["compile.mode=max-autotune"]``) or nested mapping -> (nested dict, problems)."""
    if not overrides:
        return {}, []
    if isinstance(overrides, Mapping):
        return OmegaConf.to_container(OmegaConf.create(dict(overrides)), resolve=False), []
    problems, good = [], []
    for item in overrides:
        if "=" not in item or not item.split("=", 1)[0].strip():
            problems.append(Problem(OVERRIDES, item, "an override must look like key.path=value"))
        else:
            good.append(item)
    try:
        cfg = OmegaConf.from_dotlist(good)
    except OmegaConfBaseException as e:
        return {}, problems + [Problem(OVERRIDES, "", f"cannot parse overrides: {e}")]
    return OmegaConf.to_container(cfg, resolve=False), problems


@dataclass
class _Layer:
    file: str
    raw: dict


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
    if isinstance(spec, Recipe):
        if not overrides:
            return spec
        layers = [_Layer(spec.source, dict(spec.raw))]
    elif isinstance(spec, Mapping):
        layers = [_Layer("<api>", dict(spec))]
        if isinstance(spec.get("base"), str):
            layers = _read_chain(resolve(spec["base"])) + layers
    else:
        layers = _read_chain(resolve(str(spec)))

    problems: list[Problem] = []
    for layer in layers:
        problems += check_recipe_mapping(layer.raw, layer.file)
    over, bad_overrides = parse_overrides(overrides)
    problems += bad_overrides
    if over:
        problems += check_recipe_mapping(over, OVERRIDES)
    if problems:
        raise RecipeError(problems, recipe=_guess_name(spec, layers))

    merged = OmegaConf.create({})
    for raw in [layer.raw for layer in layers] + ([over] if over else []):
        merged = OmegaConf.merge(merged, OmegaConf.create(raw))
    leaf = layers[-1].file
    try:
        data = OmegaConf.to_container(merged, resolve=True)
    except OmegaConfBaseException as e:
        raise RecipeError([Problem(leaf, "", f"cannot resolve interpolation: {e}")]) from None
    # an interpolation may have produced a value of the wrong type
    problems = check_recipe_mapping(data, leaf)
    if problems:
        raise RecipeError(problems, recipe=_guess_name(spec, layers))

    data.pop("base", None)
    header = build(RecipeHeader, {k: v for k, v in data.items() if k in HEADER_KEYS})
    name = header.name or (Path(leaf).stem if leaf.endswith((".yaml", ".yml")) else "custom")
    data["name"] = name
    sections = {k: build_section(k, v or {}) for k, v in data.items()
                if k not in HEADER_KEYS and v is not None}
    for k, sec in sections.items():
        for key, message, allowed in sec.check():
            problems.append(Problem(leaf, f"{k}.{key}", message, allowed))
    if problems:
        raise RecipeError(problems, recipe=name)
    return Recipe(
        name=name,
        description=header.description,
        family=header.family,
        requires=header.requires,
        sections=sections,
        source=leaf,
        chain=tuple(layer.file for layer in reversed(layers)),
        raw=data,
    )


def _guess_name(spec: Any, layers: list[_Layer]) -> str:
    raw = layers[-1].raw if layers else {}
    if isinstance(raw, dict) and isinstance(raw.get("name"), str):
        return raw["name"]
    return str(spec) if isinstance(spec, (str, Path)) else "custom"
