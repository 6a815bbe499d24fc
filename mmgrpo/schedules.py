"""Parameters that move over training (Hölder p, length budgets, down-sampling ratios): one mechanism.

A method parameter given as a mapping with a `schedule` key is resolved to a number at every step:

    objective_params: {p: {schedule: linear, start: 1.0, end: 0.0, steps: 200}}

Schedules are pure functions of (step, total_steps), so resuming a run restores them exactly.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from .registry import Registry

SCHEDULES: Registry[Callable[..., float]] = Registry("schedule")
get = SCHEDULES.get
names = SCHEDULES.names


@SCHEDULES.register("constant", "value stays at start")
def constant(frac: float, start: float, end: float | None = None) -> float:
    return start


@SCHEDULES.register("linear", "start + (end - start) * frac")
def linear(frac: float, start: float, end: float) -> float:
    return start + (end - start) * frac


@SCHEDULES.register("cosine", "cosine from start to end")
def cosine(frac: float, start: float, end: float) -> float:
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * frac))


@SCHEDULES.register("exponential", "geometric interpolation from start to end (both > 0)")
def exponential(frac: float, start: float, end: float) -> float:
    return start * (end / start) ** frac


@SCHEDULES.register("piecewise", "piecewise-linear through points [[frac, value], ...] (frac in [0, 1], increasing)")
def piecewise(frac: float, points: list) -> float:
    """Linear interpolation between (frac, value) knots; constant before the first and after the last.

    `{schedule: piecewise, points: [[0, 0.25], [0.5, 0.5], [1, 1.0]]}` relaxes a down-sampling ratio
    quickly at first, then slowly (D^3S-style curricula, S48; staged length budgets, S44).

    Use when: a curriculum has stages of different speed.
    """
    try:
        knots = sorted((float(f), float(v)) for f, v in points)
    except (TypeError, ValueError):
        raise TypeError(f"points must be a list of [frac, value] pairs, got {points!r}") from None
    if not knots:
        raise TypeError("points must hold at least one [frac, value] pair")
    if frac <= knots[0][0]:
        return knots[0][1]
    for (f0, v0), (f1, v1) in zip(knots, knots[1:]):
        if frac <= f1:
            return v0 if f1 == f0 else v0 + (v1 - v0) * (frac - f0) / (f1 - f0)
    return knots[-1][1]


@SCHEDULES.register("step", "start until frac reaches `at`, then end (a switch at one point of training)")
def step(frac: float, start: float, end: float, at: float = 0.5) -> float:
    """`start` before fraction `at` of the schedule's span, `end` from then on.

    Use when: a method should switch on or off at one point of training (e.g. a penalty after warm-up).
    """
    return start if frac < at else end


def is_schedule(value: Any) -> bool:
    return isinstance(value, dict) and "schedule" in value


def value_at(spec: dict, step: int, total_steps: int, where: str = "schedule") -> float:
    """The scheduled value at `step`: frac = min(1, (step - begin) / steps) with `steps` default total."""
    spec = dict(spec)
    name = spec.pop("schedule")
    try:
        fn = get(name)
    except KeyError as exc:
        raise ValueError(f"{where}: {exc.args[0]}") from None
    span = spec.pop("steps", total_steps)
    begin = spec.pop("begin", 0)
    frac = min(1.0, max(0.0, (step - begin) / max(1, span)))
    try:
        return float(fn(frac, **spec))
    except TypeError as exc:
        raise ValueError(f"{where}: bad schedule parameters {sorted(spec)}: {exc}") from None


def resolve(params: dict, step: int, total_steps: int, where: str = "params") -> dict:
    """Replace every scheduled entry of `params` by its value at `step`."""
    return {k: value_at(v, step, total_steps, f"{where}.{k}") if is_schedule(v) else v for k, v in params.items()}
