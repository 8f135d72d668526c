"""Name -> constructor registries (timm-style) that fail with close matches instead of KeyError."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Generic, TypeVar

from selfsup.errors import UserError

T = TypeVar("T")


def close_matches_hint(name: str, known: list[str]) -> str:
    """A ' did you mean ...?' fragment for an unknown name, or '' when nothing is close."""
    matches = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    return f"; did you mean {', '.join(repr(m) for m in matches)}?" if matches else ""


class Registry(Generic[T]):
    """A named table of constructors; `kind` names the table in error messages ("backbone", "method")."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = entry
            return entry

        return add

    def get(self, name: str) -> T:
        if name not in self._entries:
            known = sorted(self._entries)
            raise UserError(
                f"unknown {self.kind} {name!r}{close_matches_hint(name, known)} (known: {', '.join(known)})"
            )
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)
