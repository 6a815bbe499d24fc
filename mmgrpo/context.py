"""Passing optional context (rollout fields, step, ...) to registered methods that ask for it by name.

A method declares what it needs in its signature: `def fn(rewards, group_ids, entropy, eps=1e-4)` asks
for the rollout's `entropy`; a parameter without a default that names a rollout field the policy does
not provide is caught at config time (`required_fields`), with a message naming the field.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

# Optional per-position / per-sample fields a Rollout may carry, filled by adapters that can.
ROLLOUT_FIELDS = ("entropy", "token_ids", "segment_ids", "stratum_ids", "seq_log_likelihood")
# Always-available context the trainer can pass.
CORE_CONTEXT = ("conds", "mask", "log_probs", "step", "total_steps", "positions", "group_ids_local")


def accepted(fn: Callable) -> dict[str, inspect.Parameter]:
    target = fn.__call__ if not inspect.isfunction(fn) and not inspect.ismethod(fn) and callable(fn) \
        and not isinstance(fn, type) else fn
    try:
        return dict(inspect.signature(target).parameters)
    except (TypeError, ValueError):
        return {}


def required_fields(fn: Callable) -> set[str]:
    """Rollout fields `fn` requires (named parameters without a default)."""
    params = accepted(fn)
    return {n for n, p in params.items() if n in ROLLOUT_FIELDS and p.default is inspect.Parameter.empty}


def wanted(fn: Callable, context_names: tuple[str, ...] = ROLLOUT_FIELDS + CORE_CONTEXT) -> set[str]:
    params = accepted(fn)
    return {n for n in context_names if n in params}


def call(fn: Callable, *args: Any, params: dict | None = None, context: dict | None = None) -> Any:
    """fn(*args, **(context items fn accepts), **params)."""
    names = accepted(fn)
    kwargs = {k: v for k, v in (context or {}).items() if k in names}
    kwargs.update(params or {})
    return fn(*args, **kwargs)
