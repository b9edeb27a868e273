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

from fastpipes.bounds import BOUNDS, check_int, read_capped
from fastpipes.errors import InputError


def read_prompts(path: str, allowed: set[str]) -> list[dict]:
    """The prompts of `path` (see the module docstring); `allowed` are the per-prompt keys
    besides "prompt". A line that is not usable carries an "error" for the job to record.
    The file must be a regular file within the bounds of :mod:`fastpipes.bounds`
    (prompt_file_bytes, prompt_lines); a longer line than prompt_chars is a bad input."""
    try:
        text = read_capped(path, "--prompts").decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"--prompts {path}: not UTF-8 text: {e}") from None
    lines = text.splitlines()
    check_int("prompt_lines", len(lines) or 1, f"--prompts {path}: the number of lines",
              extra="; split it into several jobs")
    prompts = read_prompts_text(text, allowed)
    if not prompts:
        raise InputError(f"--prompts {path}: the file has no prompts, only blank lines or "
                         "none (one prompt per line, or one JSON object per line)")
    return prompts


def read_prompts_text(text: str, allowed: set[str]) -> list[dict]:
    out = []
    limit = int(BOUNDS["prompt_chars"].hi)
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():  # a blank line (e.g. the file's last) is no prompt
            continue
        entry: dict = {"prompt": line}
        if len(line) > limit:
            entry = {"prompt": "", "error": f"line {n}: {len(line):,} characters; a line may "
                     f"have at most {limit:,} ({BOUNDS['prompt_chars'].why})"}
        elif line.lstrip().startswith("{"):
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
