"""Named registries of pure functions and components, with errors that list the valid names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered item: the object, a one-line description and an optional paper reference."""

    name: str
    obj: T
    description: str
    ref: str = ""


class Registry(Generic[T]):
    """A mapping name -> object. `get` of an unknown name raises a KeyError listing valid names."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, description: str = "", ref: str = "") -> Callable[[T], T]:
        """Decorator: `@REG.register("grpo", "group mean/std normalization")`."""

        def deco(obj: T) -> T:
            self.add(name, obj, description, ref)
            return obj

        return deco

    def add(self, name: str, obj: T, description: str = "", ref: str = "") -> None:
        if name in self._entries and self._entries[name].obj is not obj:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        if not description:
            doc = (getattr(obj, "__doc__", None) or "").strip()
            description = doc.splitlines()[0] if doc else ""
        self._entries[name] = Entry(name, obj, description, ref)

    def get(self, name: str) -> T:
        try:
            return self._entries[name].obj
        except KeyError:
            raise KeyError(
                f"unknown {self.kind} {name!r}; valid names: {', '.join(self.names()) or '(none)'}"
            ) from None

    def entry(self, name: str) -> Entry[T]:
        self.get(name)
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry[T]]:
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)


def describe(entry: Entry[Any]) -> str:
    ref = f" [{entry.ref}]" if entry.ref else ""
    return f"{entry.description}{ref}"
