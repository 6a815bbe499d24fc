"""`WeightedSum`: several rewards combined as one, sum_k w_k * r_k, with explicit NaN handling.

A NaN member score makes that sample's sum NaN (not applicable), unless `nan_as` gives the value a NaN
member counts as. The sum is groupwise when any member is, and passes `group_ids` and metadata to all.
(Normalize-each-then-sum is the advantage-level alternative and lives in the core.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from mmgrpo.reward import combine_rewards


class WeightedSum:
    """sum_k weight_k * reward_k over named member rewards: `[N]` float32."""

    name = "weighted_sum"

    @dataclass
    class Config:
        rewards: list[dict] = field(default_factory=list)  # members: [{name: ..., weight: 1.0, **params}, ...]
        nan_as: float | None = None  # value a NaN member score counts as; null = a NaN member makes the sum NaN

    def __init__(self, cfg: Config | None = None, device: Any = None, members: list[tuple[Any, float]] | None = None):
        self.cfg = cfg or self.Config()
        if members is None:
            from mmgrpo.components import REWARDS, build

            members = []
            for i, spec in enumerate(self.cfg.rewards):
                where = f"{self.name}.rewards[{i}]"
                if not isinstance(spec, dict):
                    raise ValueError(f"{where}: expected a mapping {{name: ..., weight: ...}}, got {spec!r}")
                spec = dict(spec)
                weight = spec.pop("weight", 1.0)
                if isinstance(weight, bool) or not isinstance(weight, (int, float)):
                    raise ValueError(f"{where}.weight: expected a number, got {weight!r}")
                members.append((build(REWARDS, spec, where, device=device), float(weight)))
        if not members:
            raise ValueError(f"reward {self.name!r}: give at least one member in rewards: [{{name: ..., weight: ...}}]")
        self.members = members
        names = [getattr(r, "name", type(r).__name__) for r, _ in members]
        self.member_names = [n if names.count(n) == 1 else f"{n}#{i}" for i, n in enumerate(names)]
        self.groupwise = any(getattr(r, "groupwise", False) for r, _ in members)
        from .payload import media_reads

        # decoded media any member reads (reward server, payload.media_reads)
        self.reads_media = tuple(sorted({f"{p}:{k}" for r, _ in members for p, k in media_reads(r)}))
        self.last_scores: dict[str, Tensor] = {}  # raw member scores of the last call, for logging

    def __call__(self, outputs: Any, conds: list, **kwargs: Any) -> Tensor:
        n = len(conds)
        cols, weights = [], []
        self.last_scores = {}
        for (reward, weight), name in zip(self.members, self.member_names):
            scores = reward(outputs, conds, **kwargs)
            scores = torch.as_tensor(scores, dtype=torch.float32).detach().cpu().reshape(-1)
            if scores.shape[0] != n:
                raise ValueError(f"reward {self.name!r}: member {name!r} returned {scores.shape[0]} scores for {n} samples")
            self.last_scores[name] = scores
            cols.append(scores)
            weights.append(weight)
        return combine_rewards(torch.stack(cols, 1), weights, self.cfg.nan_as)   # the trainer's own NaN rule
