"""A reward from its command-line spec: a registry name or `package.module:Class`, `--param k=v` as YAML.

Shared by `mmgrpo serve-reward` (`server.py`) and `mmgrpo reward` (`cli.py`), so neither imports the other.
"""

from __future__ import annotations

from typing import Any


def parse_params(items: list[str]) -> dict[str, Any]:
    """`["k=v", ...]` -> `{k: yaml(v)}`; an item without `=` is an error naming it."""
    import yaml

    params: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--param {item!r} must look like key=value")
        try:
            params[key] = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError as exc:
            raise ValueError(f"--param {item!r}: value is not valid YAML ({exc})") from None
    return params


def build_reward(name: str, params: dict[str, Any], device: str | None = None) -> Any:
    """A reward by registry name or `module:Class` path, its `Config` validated from `params`."""
    from mmgrpo.components import REWARDS, build

    spec = {"_component_": name, **params} if ":" in name else {"name": name, **params}
    runtime = {"device": device} if device else {}
    return build(REWARDS, spec, f"reward {name!r}", **runtime)
