"""Name -> factory registries: every choice (backbone, loss, sampler, augmenter, ...) is a name."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from ltkit.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of factories; unknown names raise an error that lists the valid ones.

    ``declared`` is the registry's tuple in ltkit/choices.py, the torch-free list that ``--help``
    and shell completion show: a name outside it is refused when registered."""

    def __init__(self, kind: str, declared: Iterable[str] | None = None):
        self.kind = kind  # e.g. "backbone", shown in error messages
        self.declared = None if declared is None else tuple(declared)
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            if self.declared is not None and name not in self.declared:
                raise ValueError(f"{self.kind} {name!r} is not declared in ltkit/choices.py (the names --help "
                                 "shows without importing torch): add it there")
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} {name!r}; valid names: {', '.join(self.names())}"
            ) from None

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._items.items())

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items


def check_choice(value: Any, valid: Iterable[str], option: str) -> str:
    """``value`` when it is one of ``valid``; else the one-line error that lists the valid names."""
    valid = list(valid)
    if value not in valid:
        raise ConfigError(f"{option} {value!r}: valid choices are {', '.join(valid)}")
    return value
