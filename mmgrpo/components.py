"""Adapters (policies) and rewards by registry name, entry point or allow-listed `_component_` path.

A component is a class (or factory) with a `Config` dataclass attribute, built as `obj(Config(**params))`;
a plain reward callable without `Config` is used as it is and takes no parameters. Built-in and
third-party components register through the entry-point groups `mmgrpo.policies` and
`mmgrpo.rewards`, loaded lazily so that naming one component never imports the others.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import is_dataclass
from importlib.metadata import entry_points
from typing import Any

from .registry import Entry, Registry

# `_component_` paths are imported only under these prefixes: an arbitrary import from a config file
# would be a code-execution hole. Extend with MMGRPO_COMPONENT_PREFIXES="mypkg.,other." (comma list).
DEFAULT_ALLOWED_PREFIXES = ("mmgrpo.",)


def allowed_prefixes() -> tuple[str, ...]:
    extra = os.environ.get("MMGRPO_COMPONENT_PREFIXES", "")
    return DEFAULT_ALLOWED_PREFIXES + tuple(p.strip() for p in extra.split(",") if p.strip())


class ComponentRegistry(Registry[Any]):
    """A registry that also knows the entry points of its group, importing one only when asked."""

    def __init__(self, kind: str, group: str):
        super().__init__(kind)
        self.group = group
        self._lazy: dict[str, Any] = {}
        self._scanned = False

    def _scan(self) -> None:
        if self._scanned:
            return
        self._scanned = True
        for ep in entry_points(group=self.group):
            if ep.name not in self._entries:
                self._lazy.setdefault(ep.name, ep)

    def get(self, name: str) -> Any:
        self._scan()
        if name not in self._entries and name in self._lazy:
            ep = self._lazy.pop(name)
            try:
                obj = ep.load()
            except Exception as exc:  # noqa: BLE001
                raise ImportError(
                    f"{self.kind} {name!r} is registered by entry point {ep.value!r} but failed to "
                    f"import: {type(exc).__name__}: {exc}. Install the extra it needs (see README)."
                ) from exc
            self.add(name, obj)
        return super().get(name)

    def names(self) -> list[str]:
        self._scan()
        return sorted(set(self._entries) | set(self._lazy))

    def entries(self) -> list[Entry[Any]]:
        out = []
        for n in self.names():
            try:
                self.get(n)
                out.append(self._entries[n])
            except ImportError as exc:
                out.append(Entry(n, None, f"(unavailable: {exc})"))
        return out


POLICIES = ComponentRegistry("policy", "mmgrpo.policies")
REWARDS = ComponentRegistry("reward", "mmgrpo.rewards")


def import_path(path: str) -> Any:
    """Import `pkg.mod:attr` or `pkg.mod.attr`, refusing modules outside the allow-list."""
    prefixes = allowed_prefixes()
    if not any(path.startswith(p) for p in prefixes):
        raise ValueError(
            f"_component_ {path!r} is outside the allowed module prefixes {list(prefixes)}; "
            "set MMGRPO_COMPONENT_PREFIXES to allow your package"
        )
    mod_name, _, attr = path.partition(":") if ":" in path else path.rpartition(".")
    if not mod_name or not attr:
        raise ValueError(f"_component_ {path!r} must look like 'package.module:Name'")
    module = importlib.import_module(mod_name)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ValueError(f"_component_ {path!r}: module {mod_name!r} has no attribute {attr!r}") from None


def resolve(registry: ComponentRegistry, spec: dict, where: str) -> tuple[Any, dict]:
    """Split a spec `{name: ..., **params}` or `{_component_: ..., **params}` into (factory, params)."""
    if not isinstance(spec, dict):
        raise ValueError(f"{where}: expected a mapping with 'name' or '_component_', got {spec!r}")
    params = dict(spec)
    if "_component_" in params:
        factory = import_path(params.pop("_component_"))
        params.pop("name", None)
    elif "name" in params:
        name = params.pop("name")
        try:
            factory = registry.get(name)
        except KeyError as exc:
            raise ValueError(f"{where}.name: {exc.args[0]}") from None
    else:
        raise ValueError(
            f"{where}: give 'name' (one of: {', '.join(registry.names())}) or '_component_'"
        )
    return factory, params


def component_config(factory: Any, params: dict, where: str) -> Any:
    """Validate `params` against the factory's `Config` dataclass; returns the Config instance or None."""
    from .config import from_dict  # late import: config imports components for validation

    cfg_cls = getattr(factory, "Config", None)
    if cfg_cls is None or not is_dataclass(cfg_cls):
        if params:
            raise ValueError(
                f"{where}: {getattr(factory, '__name__', factory)!r} takes no parameters, got {sorted(params)}"
            )
        return None
    return from_dict(cfg_cls, params, where)


def build(registry: ComponentRegistry, spec: dict, where: str, **runtime: Any) -> Any:
    """Build a component from its spec. `runtime` kwargs (device, ...) go to factories that accept them."""
    factory, params = resolve(registry, spec, where)
    cfg = component_config(factory, params, where)
    if cfg is None:
        return factory
    import inspect

    try:
        accepted = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        accepted = {}
    kwargs = {k: v for k, v in runtime.items() if k in accepted}
    return factory(cfg, **kwargs)
