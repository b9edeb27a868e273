"""Every error a user can reach, in one module.

All derive from :class:`FastpipesError`, so ``except fastpipes.FastpipesError`` catches
anything fastpipes raises on purpose. Internal invariants use ``assert`` instead.
"""
from __future__ import annotations

from dataclasses import dataclass


class FastpipesError(Exception):
    """Base class of every error fastpipes raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a recipe: where, what value, and what is allowed."""

    file: str  # the YAML file (or "<overrides>", "<api>") the value came from
    key: str  # dotted key path, e.g. "compile.mode"
    message: str  # what is wrong, e.g. "unknown value 'fast'"
    allowed: str = ""  # what would be accepted, e.g. "one of: default, reduce-overhead"

    def __str__(self) -> str:
        where = f"{self.file}: {self.key}" if self.key else self.file
        text = f"{where}: {self.message}"
        return f"{text} (allowed: {self.allowed})" if self.allowed else text


class RecipeError(FastpipesError):
    """A recipe could not be loaded or is invalid. Lists every problem at once."""

    verdict = "is invalid"  # how the first line of the message reads

    def __init__(self, problems: list[Problem] | Problem | str, recipe: str = ""):
        if isinstance(problems, str):
            problems = [Problem(recipe or "<recipe>", "", problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems: list[Problem] = list(problems)
        self.recipe = recipe
        head = f"recipe {recipe!r} {self.verdict}" if recipe else f"recipe {self.verdict}"
        n = len(self.problems)
        lines = [f"{head}: {n} problem{'s' if n != 1 else ''}"]
        lines += [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))


class RecipeNotFoundError(RecipeError):
    """A recipe name or path that resolves to nothing."""


class UnknownNameError(FastpipesError, KeyError):
    """A name looked up in a registry that does not hold it."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class ArgumentTypeError(FastpipesError, TypeError):
    """A public fastpipes function got an argument of the wrong type (e.g. strict="no"):
    the message names the argument, what it got and what is allowed."""


class UnsupportedPipelineError(FastpipesError, TypeError):
    """accelerate() got an object no adapter understands."""



class PassError(FastpipesError):
    """A pass failed while being applied; the pipeline has been restored."""

    def __init__(self, pass_name: str, reason: str):
        self.pass_name = pass_name
        self.reason = reason
        super().__init__(
            f"pass {pass_name!r} failed: {reason}\n"
            "The pipeline was restored exactly as it was before accelerate()."
        )


class PreflightError(RecipeError):
    """A valid recipe that cannot be applied to this pipeline on this machine (an unknown
    component, a backend that does not import, a conflict); raised before anything is
    touched, listing every problem."""

    verdict = "cannot be applied to this pipeline here"


class ConflictError(PreflightError):
    """Two passes of one recipe (or a recipe and an earlier accelerate()) cannot be combined."""


class HardwareError(PreflightError):
    """This machine lacks what a recipe requires (raised with strict=True)."""


class InputError(FastpipesError, ValueError):
    """Bad input to a pipeline fastpipes wraps (wrong shape, dtype, missing step)."""


class BenchmarkError(FastpipesError):
    """A benchmark could not be set up or run."""


class CacheError(FastpipesError):
    """A cache directory or file that cannot be used or must not be trusted (not writable,
    a file in the way, owned by another user, writable by group or others)."""
