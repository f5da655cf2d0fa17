"""Named registries: cell types, sparsity methods and tasks are each looked up by name in one place.

Each entry is registered by the module that defines it (``CELLS.register(LSTM())``), so adding a cell
type or a method is a new file and a registration, never an edit of a string switch elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries of one kind by name; ``registry[name]`` names the known ones when ``name`` is not one.

    Entries carry their own ``name`` and ``description`` attributes.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, entry: T) -> T:
        name = entry.name  # type: ignore[attr-defined]
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise ValueError(f"unknown {self.kind} {name!r}; expected one of {', '.join(self._entries)}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[T]:
        return iter(self._entries.values())

    def names(self) -> list[str]:
        return list(self._entries)
