"""Name -> constructor registries (models, methods, datasets, analyses).

Adding a model, method, dataset or analysis is adding a file that decorates its constructor with
the registry's ``register``; the tests iterate over everything registered.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Generic, TypeVar

from kdscope.errors import KdscopeError

if TYPE_CHECKING:
    from kdscope.analyses.base import Analysis

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of constructors of one kind (``kind`` is used in error messages)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``; a name may be registered only once."""

        def add(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        """The entry called ``name``; an unknown name is a user error listing the known ones."""
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries))
            raise KdscopeError(f"unknown {self.kind} {name!r} (known: {known})") from None

    def names(self, pattern: str = "*") -> list[str]:
        """Sorted registered names matching a shell-style ``pattern`` (like timm's list_models)."""
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


ANALYSES: Registry[type[Analysis]] = Registry("analysis")
"""The analyses by name (filled by :func:`kdscope.analyses.register_analysis`). It lives here,
below :mod:`kdscope.config`, so that the configuration checks analysis names and parameters
without importing the analyses, which import the configuration."""
