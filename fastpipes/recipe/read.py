"""Read one recipe file (or override value) as plain YAML data, and nothing else.

Every way a file can be unreadable is a RecipeError naming the file. What an error says
never quotes the file: a path can name anything (``base: ../../etc/shadow``), so a parser
message keeps only one-character tokens, and content that is not a recipe is described by
its kind (see validate.not_a_recipe), never shown.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from fastpipes.errors import Problem, RecipeError
from fastpipes.recipe.validate import MAX_DEPTH

MAX_BYTES = 256 * 1024  # a recipe file is a few hundred bytes


def read_yaml(path: Path) -> Any:
    """Safe-load one YAML recipe file; every way it can be unreadable is a RecipeError
    naming the file (and the line and column of a syntax error).

    A recipe is a few hundred bytes of UTF-8: larger files, other encodings and nesting too
    deep to parse are refused before anything else looks at them.
    """
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise RecipeError(f"cannot read recipe file {path}: {e.strerror}") from None
    if len(data) > MAX_BYTES:
        raise RecipeError([Problem(str(path), "", f"file is larger than {MAX_BYTES // 1024} "
                                                  "KiB", "a recipe of at most that size")])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RecipeError([Problem(str(path), "", f"not UTF-8 text (byte {data[e.start]:#04x} "
                                                  f"at offset {e.start})",
                                   "UTF-8 text; save the file as UTF-8")]) from None
    return safe_load(text, str(path))


def _duplicate_keys(node: Any, key: str, seen: set[int]) -> list[tuple[str, int, int]]:
    """(dotted key, line, line of the first copy) for each key a mapping of the composed YAML
    `node` holds twice: PyYAML keeps the last copy without a word, and a recipe whose second
    ``compile:`` silently replaces the first is a mistake to report, not to guess at. Each
    node is visited once (aliases share nodes), so this is linear in the document."""
    if id(node) in seen:
        return []
    seen.add(id(node))
    out: list[tuple[str, int, int]] = []
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for k, v in node.value:
            name = f"{key}.{k.value}" if key else str(k.value)
            if isinstance(k, yaml.ScalarNode) and k.tag != "tag:yaml.org,2002:merge":
                line = k.start_mark.line + 1  # `<<: *base` overrides on purpose: not a copy
                if first.setdefault(k.value, line) != line:
                    out.append((name, line, first[k.value]))
            out += _duplicate_keys(v, name, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            out += _duplicate_keys(v, f"{key}[{i}]", seen)
    return out


def _scrubbed(problem: str) -> str:
    """A YAML parser message with what it quotes from the file left out (the file may not be
    a recipe at all, e.g. /etc/shadow): only one-character tokens and ``<stream end>``-style
    names stay, since they say what to fix without showing anything of the file."""
    return re.sub(r"""(['"])(.*?)\1""", lambda m: m.group(0) if len(m.group(2)) <= 2 or
                  re.fullmatch(r"<[a-z ]+>", m.group(2)) else "(text from the file)", problem)


def safe_load(text: str, where: str) -> Any:
    """`text` (from file or override `where`) as plain YAML data; RecipeError naming `where`
    when it does not parse or holds a key twice."""
    loader = yaml.SafeLoader(text)  # safe: no tags, no object construction
    try:
        node = loader.get_single_node()
        duplicates = _duplicate_keys(node, "", set()) if node is not None else []
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = e.problem or type(e).__name__
        if e.context and e.context.startswith("found"):  # e.g. a duplicate anchor
            problem = f"{e.context.split(';')[0]}: {problem}"
        raise RecipeError([Problem(where, "", f"malformed YAML{at}: {_scrubbed(problem)}")]
                          ) from None
    except yaml.YAMLError as e:  # no mark; its text may quote the file: its kind only
        raise RecipeError([Problem(where, "", f"malformed YAML ({type(e).__name__})")]) from None
    except RecursionError:
        raise RecipeError([Problem(where, "", "nested too deeply to parse",
                                   f"at most {MAX_DEPTH} levels")]) from None
    finally:
        loader.dispose()
    if duplicates:
        raise RecipeError([Problem(where, key, f"duplicate key at line {line} (first at line "
                                               f"{first}); YAML would keep only the last",
                                   "each key once per mapping: merge the two into one")
                           for key, line, first in duplicates])
    return {} if data is None else data
