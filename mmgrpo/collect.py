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

COLLECTORS: Registry = Registry("collector", positional=("ctx",))
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
        """The combined reward [n] of raw scores [n, K] (`mmgrpo.reward.combine_rewards`: the trainer's rule)."""
        from .reward import combine_rewards

        return combine_rewards(raw, self.reward_weights)


@COLLECTORS.register("single", "sample the step's groups once and score them (standard GRPO)")
def single(ctx: CollectContext) -> tuple[Rollout, Tensor]:
    rollout = ctx.sample(ctx.batch)
    return rollout, ctx.score(rollout)
