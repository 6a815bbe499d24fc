"""Adapters (policies) and rewards by registry name, entry point or allow-listed `_component_` path.

A component is a class (or factory) with a `Config` dataclass attribute, built as `obj(Config(**params))`;
a plain reward callable without `Config` is used as it is and takes no parameters. Built-in and
third-party components register through the entry-point groups `mmgrpo.policies` and
`mmgrpo.rewards`, loaded lazily so that naming one component never imports the others. A `_component_`
path must lie in an allowed package (checked on the string, before any import) and name a class or
function that is registered or marked with `@component`; anything else in an allowed module is refused.
"""

from __future__ import annotations

import importlib
import inspect
import os
from dataclasses import is_dataclass
from importlib.metadata import entry_points
from typing import Any, TypeVar

from .registry import Entry, Registry
from .schema import ConfigError, from_dict

T = TypeVar("T")

# `_component_` paths are imported only from these packages: an arbitrary import from a config file
# would be a code-execution hole. Extend with MMGRPO_COMPONENT_PREFIXES="mypkg,other.sub" (comma list of
# package names; a trailing dot is allowed). A prefix matches whole package names: `mypkg` admits
# `mypkg` and `mypkg.x`, never `mypkg_evil`.
DEFAULT_ALLOWED_PREFIXES = ("mmgrpo",)

COMPONENT_MARK = "__mmgrpo_component__"


def allowed_prefixes() -> tuple[str, ...]:
    extra = os.environ.get("MMGRPO_COMPONENT_PREFIXES", "")
    return DEFAULT_ALLOWED_PREFIXES + tuple(p.strip().rstrip(".") for p in extra.split(",") if p.strip().rstrip("."))


def component(obj: T) -> T:
    """Mark a class or function as a component that configs may name by `_component_` path (registered
    entry points need no mark). The mark is not inherited: each subclass is marked on its own."""
    if not (inspect.isclass(obj) or inspect.isfunction(obj)):
        raise TypeError(f"@component marks a class or function, not {type(obj).__name__}")
    setattr(obj, COMPONENT_MARK, True)
    return obj


def is_marked(obj: Any) -> bool:
    return (inspect.isclass(obj) and vars(obj).get(COMPONENT_MARK) is True) or \
        (inspect.isfunction(obj) and getattr(obj, COMPONENT_MARK, False) is True)


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


def _split_path(path: Any, where: str) -> tuple[str, str]:
    """`pkg.mod:Name` or `pkg.mod.Name` -> (module, attribute), checked as dotted identifiers."""
    key = f"{where}._component_" if where else "_component_"
    shape = "'package.module:Name' (a registered or @component-marked class or function)"
    if not isinstance(path, str):
        raise ConfigError(f"{key}: expected a string {shape}, got {type(path).__name__} {path!r}")
    mod_name, _, attr = path.partition(":") if ":" in path else path.rpartition(".")
    if not (mod_name and attr.isidentifier() and all(p.isidentifier() for p in mod_name.split("."))):
        raise ConfigError(f"{key}: {path!r} must look like {shape}")
    return mod_name, attr


def _allowed(mod_name: str, prefixes: tuple[str, ...]) -> bool:
    return any(mod_name == p or mod_name.startswith(p + ".") for p in prefixes)


def _registered_paths(registry: ComponentRegistry | None) -> set[tuple[str, str]]:
    groups = [registry.group] if registry is not None else ["mmgrpo.policies", "mmgrpo.rewards"]
    return {(ep.module, ep.attr) for g in groups for ep in entry_points(group=g) if ep.attr}


def import_path(path: Any, registry: ComponentRegistry | None = None, where: str = "") -> Any:
    """Import `pkg.mod:Name` (or `pkg.mod.Name`) and return it, if the module lies in an allowed package
    (checked before anything is imported) and the object is a component: a class or function that is
    registered (in `registry`, or any component group) or marked with `@component`."""
    key = f"{where}._component_" if where else "_component_"
    mod_name, attr = _split_path(path, where)
    prefixes = allowed_prefixes()
    if not _allowed(mod_name, prefixes):
        raise ConfigError(
            f"{key}: {path!r} is outside the allowed module prefixes {list(prefixes)}; set "
            f"MMGRPO_COMPONENT_PREFIXES={mod_name.split('.')[0]} to allow that package")
    try:
        module = importlib.import_module(mod_name)
    except Exception as exc:  # noqa: BLE001 - any failure to import is the config's problem to name
        raise ConfigError(f"{key}: {path!r}: module {mod_name!r} cannot be imported "
                          f"({type(exc).__name__}: {exc})") from None
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"{key}: {path!r}: module {mod_name!r} has no attribute {attr!r}") from None
    if not (inspect.isclass(obj) or inspect.isfunction(obj)):
        raise ConfigError(f"{key}: {path!r} is a {type(obj).__name__}, not a component; name a class or "
                          "function registered as a policy or reward or marked with @mmgrpo.components.component")
    paths = _registered_paths(registry)
    registered = ((mod_name, attr) in paths or (getattr(obj, "__module__", ""), obj.__qualname__) in paths
                  or (registry is not None and any(e.obj is obj for e in registry._entries.values())))
    if not (registered or is_marked(obj)):
        kind = registry.kind if registry is not None else "component"
        raise ConfigError(f"{key}: {path!r} is not a registered {kind} nor marked with "
                          "@mmgrpo.components.component; register it (entry point) or mark it")
    return obj


def resolve(registry: ComponentRegistry, spec: dict, where: str) -> tuple[Any, dict]:
    """Split a spec `{name: ..., **params}` or `{_component_: ..., **params}` into (factory, params)."""
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a mapping with 'name' or '_component_', got {spec!r}")
    params = dict(spec)
    if "_component_" in params:
        factory = import_path(params.pop("_component_"), registry, where)
        params.pop("name", None)
    elif "name" in params:
        name = params.pop("name")
        if not isinstance(name, str):
            raise ConfigError(f"{where}.name: expected a string (one of: {', '.join(registry.names())}), got {name!r}")
        try:
            factory = registry.get(name)
        except KeyError as exc:
            raise ConfigError(f"{where}.name: {exc.args[0]}") from None
    else:
        raise ConfigError(
            f"{where}: give 'name' (one of: {', '.join(registry.names())}) or '_component_'"
        )
    return factory, params


def component_config(factory: Any, params: dict, where: str) -> Any:
    """Validate `params` against the factory's `Config` dataclass; returns the Config instance or None."""
    cfg_cls = getattr(factory, "Config", None)
    if cfg_cls is None or not is_dataclass(cfg_cls):
        if params:
            raise ConfigError(
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
    try:
        accepted = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        accepted = {}
    kwargs = {k: v for k, v in runtime.items() if k in accepted}
    return factory(cfg, **kwargs)
