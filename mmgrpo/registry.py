"""Named registries of pure functions and components, with errors that list the valid names."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered item: the object, a one-line description, an optional paper reference, the inputs it
    declares (`requires`, names of `mmgrpo.inputs.MethodInputs` fields) and its user-settable parameters."""

    name: str
    obj: T
    description: str
    ref: str = ""
    requires: tuple[str, ...] = ()
    params: tuple[str, ...] | None = None       # None: not a method registry (components, schedules, ...)


class Registry(Generic[T]):
    """A mapping name -> object. `get` of an unknown name raises a KeyError listing valid names.

    A method registry gives `positional`: the tensors every member takes first (estimators: rewards,
    group_ids). Its members may declare `requires=(...)`, checked against `MethodInputs` when registered;
    the parameters a config may set are read once from the signature here (everything after the positional
    tensors that is not a declared input), so config validation never looks at signatures itself.
    """

    def __init__(self, kind: str, positional: tuple[str, ...] | None = None):
        self.kind = kind
        self.positional = positional
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, description: str = "", ref: str = "",
                 requires: tuple[str, ...] = (), positional: tuple[str, ...] | None = None) -> Callable[[T], T]:
        """Decorator: `@REG.register("grpo", "group mean/std normalization")`. `positional` overrides the
        registry's leading tensors for one member (forward-process objectives take other tensors first)."""

        def deco(obj: T) -> T:
            self.add(name, obj, description, ref, requires, positional)
            return obj

        return deco

    def add(self, name: str, obj: T, description: str = "", ref: str = "", requires: tuple[str, ...] = (),
            positional: tuple[str, ...] | None = None) -> None:
        if name in self._entries and self._entries[name].obj is not obj:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        if not description:
            doc = (getattr(obj, "__doc__", None) or "").strip()
            description = doc.splitlines()[0] if doc else ""
        params = None
        if self.positional is not None:
            from .inputs import check_requires

            requires = check_requires(self.kind, name, requires)
            params = _user_params(obj, positional if positional is not None else self.positional, requires)
        elif requires:
            raise ValueError(f"{self.kind} {name!r}: this registry takes no `requires`")
        self._entries[name] = Entry(name, obj, description, ref, tuple(requires), params)

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


def _user_params(obj: Any, positional: tuple[str, ...], requires: tuple[str, ...]) -> tuple[str, ...]:
    """Keyword parameters a config may set: a function's after its positional tensors and declared inputs; a
    class's (a stateful method built once with its params) constructor parameters."""
    target = obj.__init__ if isinstance(obj, type) else obj
    try:
        sig = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return ()
    skip = set(positional) | set(requires) | {"self"}
    names = [n for n, p in sig.items() if n not in skip
             and p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)]
    if not isinstance(obj, type):
        missing = [n for n in requires if n not in sig]
        if missing:
            raise ValueError(f"{getattr(obj, '__name__', obj)!r} declares inputs {missing} it does not take")
    return tuple(names)


def describe(entry: Entry[Any]) -> str:
    ref = f" [{entry.ref}]" if entry.ref else ""
    return f"{entry.description}{ref}"
