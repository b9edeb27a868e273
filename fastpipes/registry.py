"""A small name -> object registry whose misses list what is allowed.

The registry owns the list of allowed names: error messages, the CLI, the docs and the
recipe validator all read it from here, never from a hand-typed copy.

A registry filled by the modules of a higher layer (the recipe sections by the passes, the
families by ``fastpipes.families``) names that module as ``filled_by``: the first read of
the registry imports it, so whoever reads the names sees all of them without ``import
fastpipes`` having imported torch and every pass first (``fastpipes --help`` never does).
"""
from __future__ import annotations

import difflib
import importlib
from typing import Callable, Generic, Iterator, TypeVar

from fastpipes.errors import UnknownNameError

T = TypeVar("T")


def did_you_mean(name: str, choices) -> str:
    """' (did you mean 'x'?)' for a close match, else ''."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class Registry(Generic[T]):
    """Maps names to objects of one kind ("pass", "adapter", ...).

    >>> r = Registry("color"); r.add("red", 1)
    >>> r.get("red")
    1
    """

    def __init__(self, kind: str, filled_by: str | None = None):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._filled_by = filled_by  # the module whose import registers the items; None: done

    def _fill(self) -> None:
        """Import the module that registers this registry's items, once, before a read."""
        if self._filled_by is None:
            return
        module, self._filled_by = self._filled_by, None  # a read during that import: no loop
        try:
            importlib.import_module(module)
        except BaseException:
            self._filled_by = module  # a later read tries again (and shows the same error)
            raise

    def add(self, name: str, item: T) -> T:
        if name in self._items and self._items[name] is not item:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = item
        return item

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""
        return lambda item: self.add(name, item)

    def get(self, name: str) -> T:
        self._fill()
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}{did_you_mean(name, self._items)}; "
                f"allowed: {', '.join(self.names()) or '(none registered)'}"
            ) from None

    def names(self) -> list[str]:
        self._fill()
        return list(self._items)

    def items(self) -> list[tuple[str, T]]:
        self._fill()
        return list(self._items.items())

    def __contains__(self, name: object) -> bool:
        self._fill()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        self._fill()
        return iter(self._items)

    def __len__(self) -> int:
        self._fill()
        return len(self._items)
