"""Sampling schedules: which denoising steps are stochastic (SDE) and trained, per sample, plus group noise.

A schedule is `fn(num_steps, group_seeds [N], **params) -> StepPlan`. It decides, for each sample, which of
the `num_steps` denoising steps use the SDE (and are trained: one time position each); the rest use the
deterministic ODE step. Every sample gets the same number T of trained positions so log-probs stack into
`[N, T]`; which steps those are may differ between groups but never inside a group (a group's members must
be comparable), so anything random is drawn from the group seed.

Schedules:
- `all`: every step but the last is SDE and trained (Flow-GRPO; the last step, into sigma = 0, is the
  Euler step, so the decoded image carries no injected noise).
- `window`: an SDE window of `window_size` consecutive steps inside an ODE trajectory, its start drawn
  uniformly in `[0, window_max_start]` from the group seed (Flow-GRPO-Fast; MixGRPO's random window).
  Only the window is stored and trained: T = window_size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from mmgrpo.registry import Registry

SCHEDULES: Registry[Callable[..., "StepPlan"]] = Registry("flow sampling schedule")

# Salts keep the draws made from one group seed independent of each other.
_SALT_WINDOW = 0x5D1
_SALT_NOISE = 0x1A7


def mix_seed(seed: int, salt: int) -> int:
    """A 63-bit seed derived from `seed` and `salt` (splitmix64 finalizer), stable across platforms."""
    z = (int(seed) * 0x9E3779B97F4A7C15 + salt) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (z ^ (z >> 31)) & 0x7FFFFFFFFFFFFFFF


@dataclass
class StepPlan:
    """Per-sample step roles for one batch."""

    sde: Tensor        # [N, K] bool: step k of sample i is stochastic (and trained)
    trained: Tensor    # [N, T] int64: the step index of each trained position, increasing along T

    @property
    def num_positions(self) -> int:
        return self.trained.shape[1]


def get(name: str) -> Callable[..., StepPlan]:
    """The schedule registered as `name` (all, window); unknown names list the valid ones."""
    return SCHEDULES.get(name)


def _plan_from_mask(sde: Tensor) -> StepPlan:
    counts = sde.sum(1)
    if (counts != counts[0]).any():
        raise ValueError(f"every sample must have the same number of SDE steps; got {counts.tolist()}")
    n, k = sde.shape
    steps = torch.arange(k).expand(n, k)
    return StepPlan(sde=sde, trained=steps[sde].reshape(n, int(counts[0])))


@SCHEDULES.register("all", "every step but the last is SDE and trained (Flow-GRPO)", "Flow-GRPO")
def all_but_last(num_steps: int, group_seeds: Tensor, **_: object) -> StepPlan:
    """Steps 0..K-2 stochastic and trained, the last step deterministic."""
    if num_steps < 2:
        raise ValueError(f"schedule 'all' needs num_steps >= 2 (one SDE step and the final ODE step); got {num_steps}")
    sde = torch.ones(len(group_seeds), num_steps, dtype=torch.bool)
    sde[:, -1] = False
    return _plan_from_mask(sde)


@SCHEDULES.register("window", "a window of SDE steps inside an ODE trajectory, shared per group (Flow-GRPO-Fast)",
                    "Flow-GRPO-Fast / MixGRPO")
def window(num_steps: int, group_seeds: Tensor, window_size: int = 2, window_max_start: int | None = None,
           **_: object) -> StepPlan:
    """SDE on steps `[start, start + window_size)`, ODE elsewhere; `start ~ U{0..window_max_start}` per group.

    `window_max_start` defaults to the last start that keeps the window off the final step
    (`num_steps - 1 - window_size`); Flow-GRPO-Fast favours early steps (e.g. `num_steps // 2`).
    """
    latest = num_steps - 1 - window_size
    if window_size < 1 or latest < 0:
        raise ValueError(
            f"window_size must be in [1, num_steps - 1] = [1, {num_steps - 1}] (the last step stays ODE); "
            f"got {window_size}"
        )
    max_start = latest if window_max_start is None else int(window_max_start)
    if not 0 <= max_start <= latest:
        raise ValueError(f"window_max_start must be in [0, {latest}] for num_steps={num_steps}, "
                         f"window_size={window_size}; got {window_max_start}")
    starts = []
    for gs in group_seeds.tolist():   # N small ints: one draw per sample, equal within a group
        g = torch.Generator().manual_seed(mix_seed(gs, _SALT_WINDOW))
        starts.append(int(torch.randint(0, max_start + 1, (1,), generator=g)))
    start = torch.tensor(starts)[:, None]                                    # [N, 1]
    k = torch.arange(num_steps)[None, :]                                     # [1, K]
    return _plan_from_mask((k >= start) & (k < start + window_size))


def sample_generators(seeds: Tensor) -> list[torch.Generator]:
    """One CPU generator per sample, seeded by the sample's own seed (independent of rank and batch split)."""
    return [torch.Generator().manual_seed(int(s)) for s in seeds.tolist()]


def initial_noise(shape: tuple[int, ...], generators: list[torch.Generator], group_seeds: Tensor,
                  shared: bool) -> Tensor:
    """Initial latents `[N, *shape]` (fp32, CPU): per-sample noise, or one noise per group when `shared`.

    Shared group noise (DanceGRPO) makes a group's members differ only by the SDE noise along the way.
    Per-sample noise is drawn from the sample's generator (which then goes on to draw its SDE noise).
    """
    if shared:
        return torch.stack([
            torch.randn(shape, generator=torch.Generator().manual_seed(mix_seed(gs, _SALT_NOISE)))
            for gs in group_seeds.tolist()
        ])
    return torch.stack([torch.randn(shape, generator=g) for g in generators])
