"""Collectors: how one step's rollout batch is gathered (sample once; refill filtered groups; ...).

A collector is registered by name and called as `fn(ctx: CollectContext, **params) -> (rollout, raw)`
where `raw` [n, K] holds this rank's scores of the K rewards. The default samples once and scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch import Tensor

from .registry import Registry
from .rollout import Rollout, SampleBatch

COLLECTORS: Registry = Registry("collector")
get = COLLECTORS.get
names = COLLECTORS.names


@dataclass
class CollectContext:
    """What a collector may use: sampling, scoring, the group sampler and the distributed helpers."""

    step: int
    batch: SampleBatch                                  # this rank's share of the step's groups
    sample: Callable[[SampleBatch], Rollout]            # policy sampling (no grad, eval mode)
    score: Callable[[Rollout], Tensor]                  # raw rewards [n, K]
    sampler: Any                                        # the GroupSampler (fresh groups: sampler.local_batch)
    gather: Callable[[Tensor], Tensor]                  # all ranks' tensors, concatenated
    all_sum: Callable[[list[float]], list[float]]       # sum floats over ranks
    rank: int = 0
    world_size: int = 1
    policy: Any = None                                  # the adapter, for hooks such as perturb_conditions
    reward_weights: list[float] | None = None           # weights of the K rewards (None = all 1.0)
    total_steps: int | None = None                      # run length, for schedules of nested collectors

    def combine(self, raw: Tensor) -> Tensor:
        """The combined reward [n] of raw scores [n, K]: weighted sum, NaN entries counting 0 (NaN if all are)."""
        import torch

        w = torch.tensor(self.reward_weights if self.reward_weights is not None else [1.0] * raw.shape[1],
                         dtype=raw.dtype)
        finite = torch.isfinite(raw)
        total = torch.where(finite, raw, torch.zeros_like(raw)).mul(w).sum(1)
        return torch.where(finite.any(1), total, torch.full_like(total, float("nan")))


@COLLECTORS.register("single", "sample the step's groups once and score them (standard GRPO)")
def single(ctx: CollectContext) -> tuple[Rollout, Tensor]:
    rollout = ctx.sample(ctx.batch)
    return rollout, ctx.score(rollout)
