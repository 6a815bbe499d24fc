"""Passing optional context (rollout fields, step, ...) to registered methods that ask for it by name.

A method declares what it needs in its signature: `def fn(rewards, group_ids, entropy, eps=1e-4)` asks
for the rollout's `entropy`; a parameter without a default that names a rollout field the policy does
not provide is caught at config time (`required_fields`), with a message naming the field.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

# Optional per-position / per-sample fields a Rollout may carry, filled by adapters that can. The first five
# are Rollout attributes; the others travel in `Rollout.extras` under the same key (see `rollout_field`):
#   segment_values [N, T] float: the adapter's value estimate V(prefix up to t), read at segment ends
#                  (S14 segment MC, S29 tree values, S46 answer-probability probes)
#   token_flags    [N, T] bool: positions a process reward model flagged as erroneous (S7 Perceval)
ROLLOUT_FIELDS = ("entropy", "token_ids", "segment_ids", "stratum_ids", "seq_log_likelihood",
                  "segment_values", "token_flags")
# Always-available context the trainer can pass.
CORE_CONTEXT = ("conds", "mask", "log_probs", "step", "total_steps", "positions", "group_ids_local")
# Context computed by the trainer from rewards (not from the rollout), passed to methods that ask for it:
#   raw_rewards       [N, K] every reward's raw score (estimators; NaN = not applicable)
#   group_reward_std  [n] std of the combined reward within each sample's group (objectives)
TRAINER_CONTEXT = ("raw_rewards", "group_reward_std")


def rollout_field(rollout: Any, name: str) -> Any:
    """The optional field `name` of a rollout: its attribute if the Rollout class has one, else `extras[name]`.

    None when the adapter did not fill it. Adapters put fields that are not Rollout attributes in
    `rollout.extras` (a dict with a leading sample axis, cut and merged with the rollout).
    """
    value = getattr(rollout, name, None)
    if value is None:
        extras = getattr(rollout, "extras", None) or {}
        value = extras.get(name)
    return value


def accepted(fn: Callable) -> dict[str, inspect.Parameter]:
    """The parameters `fn` is called with: a function's own, an instance's `__call__`'s, and for a CLASS (a
    stateful method built once by the trainer) the parameters of its `__call__`, not of its constructor."""
    if isinstance(fn, type):
        call = next((k.__dict__["__call__"] for k in fn.__mro__ if "__call__" in k.__dict__), None)
        if call is None:
            return {}
        params = _signature(call)
        params.pop("self", None)
        return params
    target = fn.__call__ if not inspect.isfunction(fn) and not inspect.ismethod(fn) and callable(fn) else fn
    return _signature(target)


def _signature(fn: Callable) -> dict[str, inspect.Parameter]:
    try:
        return dict(inspect.signature(fn).parameters)
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
