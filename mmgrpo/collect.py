"""Collectors: how one step's rollout batch is gathered (sample once; refill filtered groups; ...).

A collector is registered by name and called as `fn(ctx: CollectContext, **params) -> (rollout, raw)`
where `raw` [n, K] holds this rank's scores of the K rewards. The default samples once and scores.

Collectors that draw more than they keep (refill rounds, down-sampling) use one `Pool`: every rank draws its
contiguous share of each global batch, the raw rewards are gathered, the collector decides on the gathered
tensors (identical on every rank), and `Pool.take` gives each rank its share of the chosen samples, sending the
samples another rank drew over the wire. Nothing is drawn twice and nothing is scored twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable

import torch
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
    gather_object: Callable[[list], list] = field(default=lambda items: list(items))  # all ranks' lists, concatenated

    def combine(self, raw: Tensor) -> Tensor:
        """The combined reward [n] of raw scores [n, K] (`mmgrpo.reward.combine_rewards`: the trainer's rule)."""
        from .reward import combine_rewards

        return combine_rewards(raw, self.reward_weights)


def even_share(total: int, rank: int, world_size: int, what: str) -> slice:
    """Rank `rank`'s contiguous slice of `total` global samples (which must split evenly over the ranks)."""
    if total % world_size:
        raise ValueError(f"{what}: {total} samples cannot be split evenly over {world_size} processes; "
                         "choose a batch_size / ratio that makes the count divisible by the number of processes")
    per = total // world_size
    return slice(rank * per, (rank + 1) * per)


def take_batch(batch: SampleBatch, idx: slice | Tensor | list[int]) -> SampleBatch:
    """The sub-batch of samples `idx` (a slice or indices)."""
    idx = torch.arange(len(batch))[idx] if isinstance(idx, slice) else torch.as_tensor(idx, dtype=torch.long)
    return SampleBatch([batch.conds[i] for i in idx.tolist()], batch.group_ids[idx], batch.seeds[idx],
                       batch.group_seeds[idx], batch.step)


class Pool:
    """Every sample one step drew, in one global order, and the one way collectors redistribute them.

    `draw(batch)` samples and scores this rank's share of the global batch `batch` (every rank calls it
    together) and returns all ranks' raw rewards of it [len(batch), K]; its samples get the global positions
    `offset .. offset + len(batch)` of the pool. `raw` / `group_ids` / `conds` are the gathered pool, on every
    rank. A collector decides on them and calls `take(indices, group_ids)`: this rank's contiguous share of the
    chosen samples as (rollout, raw), in the order of `indices`.
    """

    def __init__(self, ctx: CollectContext, what: str = "collector"):
        self.ctx, self.what = ctx, what
        self.batches: list[SampleBatch] = []
        self.offsets: list[int] = []
        self._local: list[tuple[int, Rollout]] = []        # (global position of its first sample, rollout)
        self._raw: list[Tensor] = []
        self.size = 0

    def draw(self, batch: SampleBatch) -> Tensor:
        ctx = self.ctx
        share = even_share(len(batch), ctx.rank, ctx.world_size, self.what)
        local = take_batch(batch, share)
        k = len(ctx.reward_weights) if ctx.reward_weights is not None else None
        if len(local) == 0 and ctx.world_size == 1:
            raw_local = torch.zeros(0, k or 1)
        else:                                              # every rank scores (rewards may gather)
            rollout = ctx.sample(local)
            raw_local = ctx.score(rollout)
            if len(rollout):
                self._local.append((self.size + share.start, rollout))
        raw = ctx.gather(raw_local)
        self.batches.append(batch)
        self.offsets.append(self.size)
        self._raw.append(raw)
        self.size += len(batch)
        return raw

    @property
    def raw(self) -> Tensor:
        """Gathered raw rewards of every draw [size, K]."""
        return torch.cat(self._raw) if self._raw else torch.zeros(0, 1)

    @property
    def group_ids(self) -> Tensor:
        return torch.cat([b.group_ids for b in self.batches]) if self.batches else torch.zeros(0, dtype=torch.long)

    def local(self) -> tuple[Rollout, Tensor] | tuple[None, Tensor]:
        """This rank's own draws, concatenated, with their raw rewards (no redistribution)."""
        if not self._local:
            return None, torch.zeros(0, self.raw.shape[1])
        roll = Rollout.concat([r for _, r in self._local]) if len(self._local) > 1 else self._local[0][1]
        pos = torch.cat([torch.arange(start, start + len(r)) for start, r in self._local])
        return roll, self.raw[pos]

    def _holder(self, g: int) -> int:
        """The rank that drew global sample `g`."""
        d = max(i for i, off in enumerate(self.offsets) if off <= g)
        per = len(self.batches[d]) // self.ctx.world_size
        return (g - self.offsets[d]) // per

    def take(self, indices: list[int] | Tensor, group_ids: Tensor) -> tuple[Rollout, Tensor]:
        """This rank's share of the global samples `indices` (renumbered to `group_ids`, one per index)."""
        ctx = self.ctx
        indices = [int(i) for i in indices]
        if len(group_ids) != len(indices):
            raise ValueError(f"{self.what}: {len(indices)} samples chosen but {len(group_ids)} group ids given")
        slices = [even_share(len(indices), r, ctx.world_size, self.what) for r in range(ctx.world_size)]
        shares = [indices[sl] for sl in slices]
        mine = shares[ctx.rank]
        where: dict[int, tuple[int, int]] = {}               # global position -> (part, row) held here
        for p, (start, roll) in enumerate(self._local):
            for j in range(len(roll)):
                where[start + j] = (p, j)
        parts = [roll for _, roll in self._local]
        if ctx.world_size > 1:                               # send what others chose from my draws
            wanted = sorted({g for r, sh in enumerate(shares) if r != ctx.rank for g in sh if g in where})
            sent = None
            if wanted:
                sent = Rollout.concat([parts[where[g][0]].select(torch.tensor([where[g][1]])) for g in wanted])
            for got_idx, got in ctx.gather_object([(wanted, sent)]):
                if got is None or not any(g in mine and g not in where for g in got_idx):
                    continue
                p = len(parts)
                parts.append(got)
                for j, g in enumerate(got_idx):
                    where.setdefault(g, (p, j))
        missing = [g for g in mine if g not in where]
        if missing:
            raise RuntimeError(f"{self.what}: samples {missing[:4]} were chosen but no rank holds them")
        offsets, total = [], 0
        for roll in parts:
            offsets.append(total)
            total += len(roll)
        order = torch.tensor([offsets[where[g][0]] + where[g][1] for g in mine], dtype=torch.long)
        cat = Rollout.concat(parts) if len(parts) > 1 else parts[0]
        rollout = cat.select(order)
        raw = self.raw[torch.tensor(mine, dtype=torch.long)] if mine else torch.zeros(0, self.raw.shape[1])
        return replace(rollout, group_ids=torch.as_tensor(group_ids)[slices[ctx.rank]].clone().long()), raw


@COLLECTORS.register("single", "sample the step's groups once and score them (standard GRPO)")
def single(ctx: CollectContext) -> tuple[Rollout, Tensor]:
    rollout = ctx.sample(ctx.batch)
    return rollout, ctx.score(rollout)
