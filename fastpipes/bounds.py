"""Every size, count and number a user gives, checked against one stated bound before any work.

One table (:data:`BOUNDS`) states each maximum once; the CLI, the Python API and the jobs
all check through :func:`check_int` / :func:`check_float`, and docs/run.md's table is
tested against :func:`markdown_table`. A bound is there to turn "runs on for hours" or
"tries to allocate 74 GiB" into an error that names the setting, the value and what is
allowed. Files a user names go through :func:`read_capped` (regular files only, a byte cap),
tensors and weights through :func:`check_finite` / :func:`first_nonfinite`.

>>> check_int("points_per_side", 32)
32
>>> check_int("points_per_side", 100000)
Traceback (most recent call last):
...
fastpipes.errors.InputError: points_per_side must be a whole number from 1 to 256 (a grid of N x N point prompts per crop; 256 is 65,536 prompts), got 100000
"""
from __future__ import annotations

import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from fastpipes.errors import InputError


# -- the type rule every check of user data shares ----------------------------------------

# a plain type in the words an error's "allowed" uses
TYPE_WORDS: dict[Any, str] = {bool: "true or false", int: "integer", float: "number",
                              str: "string", type(None): "null", list: "list", dict: "mapping"}


def fits_type(value: Any, tp: type, *, int_is_float: bool = True) -> bool:
    """Whether user data `value` (YAML, JSON, a CLI option) is of plain type `tp`.

    A bool is neither an int nor a number (``True`` would pass as 1); an int is a float
    unless `int_is_float` is False (Inductor's own options: a float there is written
    with a decimal point).

    >>> fits_type(True, int), fits_type(3, float), fits_type(3, float, int_is_float=False)
    (False, True, False)
    """
    if isinstance(value, bool) and tp in (int, float):
        return False
    if tp is float and int_is_float:
        return isinstance(value, (int, float))
    return isinstance(value, tp)


@dataclass(frozen=True)
class Bound:
    """Allowed values of one setting: lo..hi (both included, or lo excluded with
    `lo_open`), whole numbers when `integer`, and a multiple of `multiple_of`."""

    name: str
    lo: float
    hi: float
    why: str  # what the setting is and why the maximum, shown in the error
    integer: bool = True
    multiple_of: int = 1
    lo_open: bool = False

    def allowed(self) -> str:
        def num(x: float) -> str:
            return f"{int(x):,}" if self.integer or float(x).is_integer() else f"{x:g}"

        kind = "a whole number" if self.integer else "a finite number"
        text = f"{kind} above {num(self.lo)} and at most {num(self.hi)}" if self.lo_open \
            else f"{kind} from {num(self.lo)} to {num(self.hi)}"
        if self.multiple_of > 1:
            text += f", a multiple of {self.multiple_of}"
        return text


MiB = 1 << 20
MAX_SEED = 2**63 - 1  # torch.manual_seed takes [-2**63, 2**64); one range for every seed

BOUNDS: dict[str, Bound] = {b.name: b for b in (
    # fastpipes run sam
    Bound("points_per_side", 1, 256, "a grid of N x N point prompts per crop; 256 is 65,536 prompts"),
    Bound("points_per_batch", 1, 1024, "point prompts decoded at once; each holds 3 image-sized FP32 masks"),
    Bound("crop_n_layers", 0, 4, "crop layers; layer i adds 4**i crops"),
    Bound("crop_n_points_downscale_factor", 1, 16, "grid shrink per crop layer"),
    Bound("point_coordinate", 0, 16384, "a point or box coordinate in pixels", integer=False),
    Bound("points_per_prompt", 1, 256, "points in one prompt"),
    Bound("prompts_per_image", 1, 4096, "prompts decoded from one image"),
    Bound("image_side", 8, 16384, "an image's width and height in pixels"),
    Bound("image_aspect", 1, 64, "long side / short side of an image", integer=False),
    Bound("images", 1, 1_000_000, "images in one job"),
    # fastpipes run sdxl
    Bound("width", 8, 4096, "image width in pixels (the VAE downsamples by 8)", multiple_of=8),
    Bound("height", 8, 4096, "image height in pixels (the VAE downsamples by 8)", multiple_of=8),
    Bound("steps", 1, 1000, "denoising steps (the scheduler has 1000 training timesteps)"),
    Bound("guidance", 0, 100, "classifier-free guidance scale", integer=False),
    # fastpipes run llama
    Bound("max_new_tokens", 1, 131072, "tokens to generate; also prompt + new <= the model's "
                                       "max_position_embeddings"),
    Bound("prompt_tokens", 1, 131072, "tokens of one prompt (also <= the model's context)"),
    Bound("temperature", 0, 100, "sampling temperature", integer=False, lo_open=True),
    Bound("top_p", 0, 1, "nucleus sampling mass", integer=False, lo_open=True),
    # every job
    Bound("seed", 0, MAX_SEED, "a random seed (seed + n for the n-th input must fit too)"),
    Bound("prompt_file_bytes", 1, 64 * MiB, "size of a --prompts file"),
    Bound("prompt_lines", 1, 100_000, "lines (inputs) of a --prompts file"),
    Bound("prompt_chars", 1, 100_000, "characters of one prompt line"),
    Bound("actors", 1, 1024, "Ray actors"),
    Bound("cpus_per_actor", 0, 1024, "CPUs per Ray actor", integer=False, lo_open=True),
    # fastpipes bench
    Bound("batch_size", 1, 1024, "inputs per timed call (SAM's published runs use 16)"),
    Bound("iters", 1, 10_000, "timed calls per configuration"),
    Bound("warmup", 0, 1000, "warm-up calls after the first one"),
    Bound("threads", 1, 1024, "torch threads in each worker"),
)}


def _bound(name: str, hi: float | None) -> Bound:
    b = BOUNDS[name]
    if hi is not None and hi < b.hi:
        from dataclasses import replace

        b = replace(b, hi=hi)
    return b


def _fail(b: Bound, label: str | None, value: Any, extra: str = "") -> InputError:
    return InputError(f"{label or b.name} must be {b.allowed()} ({b.why}){extra}, got {value!r}")


def check_int(name: str, value: Any, label: str | None = None, hi: int | None = None,
              extra: str = "") -> int:
    """`value` if it is a whole number within BOUNDS[name] (and <= `hi`, a tighter limit
    such as the model's context), else InputError naming `label` (default: the name),
    the value and the allowed range. Booleans and floats are not whole numbers."""
    b = _bound(name, hi)
    if not fits_type(value, int):
        raise _fail(b, label, value, extra)
    if value < b.lo or value > b.hi or value % b.multiple_of:
        raise _fail(b, label, value, extra)
    return value


def check_float(name: str, value: Any, label: str | None = None) -> float:
    """`value` as a float if it is a finite number within BOUNDS[name], else InputError
    (NaN and infinities are named as such)."""
    b = BOUNDS[name]
    if not fits_type(value, float):
        raise _fail(b, label, value)
    x = float(value)
    if not math.isfinite(x):
        raise InputError(f"{label or b.name} is {x} (not finite); it must be {b.allowed()} "
                         f"({b.why})")
    if x > b.hi or x < b.lo or (b.lo_open and x == b.lo):
        raise _fail(b, label, value)
    return x


def check_finite(label: str, values: Iterable[float]) -> None:
    """InputError naming `label` if any of `values` is NaN or infinite."""
    for v in values:
        if not math.isfinite(float(v)):
            raise InputError(f"{label} has a non-finite value ({float(v)}); give finite numbers")


def read_capped(path: str | Path, label: str, cap: str = "prompt_file_bytes") -> bytes:
    """The bytes of `path` if it is a regular file of at most BOUNDS[cap].hi bytes; a device,
    FIFO or directory (``/dev/zero``, ``/dev/stdin``) or a bigger file is an InputError, and
    at most cap + 1 bytes are ever read (a file growing while read is caught too)."""
    limit = int(BOUNDS[cap].hi)
    p = Path(path).expanduser()
    try:
        with open(p, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise InputError(f"{label} {path}: not a regular file (a device, pipe or "
                                 "directory is not read); give a text file")
            data = f.read(limit + 1)
    except OSError as e:
        raise InputError(f"{label} {path}: cannot read it: {e.strerror or e}") from None
    if len(data) > limit:
        raise InputError(f"{label} {path}: more than {limit // MiB} MiB (at most "
                         f"{limit:,} bytes: {BOUNDS[cap].why}); split it into several jobs")
    return data


def first_nonfinite(named: Iterable[tuple[str, Any]]) -> str | None:
    """The name of the first floating-point tensor of (name, tensor) pairs holding a NaN or
    an infinity, or None. Cheap: one sum per tensor (NaN and inf propagate); only a tensor
    whose sum is not finite is looked at element-wise (a finite tensor can overflow its sum)."""
    import torch

    for name, t in named:
        if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.numel() == 0:
            continue
        if t.is_meta:
            continue
        if not torch.isfinite(t.sum()):  # same dtype: a widening cast is 10x slower
            if not bool(torch.isfinite(t).all()):
                return name
    return None


def markdown_table() -> str:
    """The bounds as the Markdown table docs/run.md shows (tested to match)."""
    rows = ["| setting | allowed | what |", "|---|---|---|"]
    rows += [f"| `{b.name}` | {b.allowed()} | {b.why} |" for b in BOUNDS.values()]
    return "\n".join(rows)
