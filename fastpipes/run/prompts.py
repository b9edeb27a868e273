"""Prompt files of the SDXL and Llama jobs: one prompt per line, or JSON lines.

A line is either plain text (the prompt) or a JSON object ``{"prompt": ..., <per-prompt
settings>}``. Blank lines (only whitespace) are skipped; every other line is one input, so a
bad JSON line or an empty JSON prompt is a bad input that the job records and goes past,
not a reason to stop before starting. Each entry carries its "line" number in the file.

>>> read_prompts_text('a cat\\n\\n{"prompt": "a dog", "seed": 7}\\n', {"seed"})
[{'prompt': 'a cat', 'line': 1}, {'prompt': 'a dog', 'seed': 7, 'line': 3}]
"""
from __future__ import annotations

import json
from pathlib import Path

from fastpipes.errors import InputError


def read_prompts(path: str, allowed: set[str]) -> list[dict]:
    """The prompts of `path` (see the module docstring); `allowed` are the per-prompt keys
    besides "prompt". A line that is not usable carries an "error" for the job to record."""
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"--prompts {path}: cannot read it: {e}") from None
    prompts = read_prompts_text(text, allowed)
    if not prompts:
        raise InputError(f"--prompts {path}: the file has no prompts, only blank lines or "
                         "none (one prompt per line, or one JSON object per line)")
    return prompts


def read_prompts_text(text: str, allowed: set[str]) -> list[dict]:
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():  # a blank line (e.g. the file's last) is no prompt
            continue
        entry: dict = {"prompt": line}
        if line.lstrip().startswith("{"):
            try:
                entry = json.loads(line)
                bad = set(entry) - allowed - {"prompt"}
                if bad:
                    entry = {"prompt": "", "error": f"line {n}: unknown keys {sorted(bad)}; "
                             f"allowed: {', '.join(['prompt', *sorted(allowed)])}"}
                elif not isinstance(entry.get("prompt"), str):
                    entry = {"prompt": "", "error": f'line {n}: needs "prompt": "<text>"'}
            except ValueError as e:
                entry = {"prompt": "", "error": f"line {n}: not valid JSON: {e}"}
        if not entry.get("error") and not entry["prompt"].strip():
            entry = {"prompt": "", "error": f"line {n}: empty prompt"}
        out.append({**entry, "line": n})
    return out
