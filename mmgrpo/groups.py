"""Group sampling: prompts repeated into groups of G, spread over ranks, with per-sample seeds.

Which prompts a step uses, and every sample's seed, are pure functions of (run seed, step), so a
resumed run and a run on a different number of ranks see exactly the same groups.
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor

from .config import ConfigError, load_prompts, resolve_data_path
from .rollout import SampleBatch

__all__ = ["GroupSampler", "derive_seed", "fixed_eval_batch", "load_prompts", "resolve_data_path"]


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers, stable across processes and Python versions."""
    h = hashlib.blake2b(",".join(str(int(p)) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


class GroupSampler:
    """Each step: draw `batch_size / G` prompts (epoch-wise permutations), repeat each G times, give this
    rank its contiguous share. Group ids are the global group index within the step."""

    def __init__(self, prompts: list, group_size: int, batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1, shuffle: bool = True):
        if not prompts:
            raise ConfigError("data: the prompt list is empty; give data.prompts or data.prompts_file with at least one prompt")
        if batch_size % group_size:
            raise ConfigError(f"batch_size={batch_size} must be a multiple of data.group_size={group_size}")
        if batch_size % world_size:
            raise ConfigError(f"batch_size={batch_size} must be divisible by the number of processes ({world_size})")
        self.prompts, self.group_size, self.batch_size = prompts, group_size, batch_size
        self.seed, self.rank, self.world_size, self.shuffle = seed, rank, world_size, shuffle
        self.groups_per_step = batch_size // group_size

    def _prompt_indices(self, step: int) -> list[int]:
        n, k = len(self.prompts), self.groups_per_step
        out, pos = [], step * k
        while len(out) < k:
            epoch, offset = divmod(pos, n)
            if self.shuffle:
                g = torch.Generator().manual_seed(derive_seed(self.seed, 7, epoch))
                order = torch.randperm(n, generator=g).tolist()
            else:
                order = list(range(n))
            take = min(k - len(out), n - offset)
            out += order[offset: offset + take]
            pos += take
        return out

    def global_batch(self, step: int) -> SampleBatch:
        """All ranks' samples of `step` (used by tests and rank-independent bookkeeping)."""
        idx = self._prompt_indices(step)
        g = self.group_size
        conds = [self.prompts[i] for i in idx for _ in range(g)]
        group_ids = torch.arange(len(idx)).repeat_interleave(g)                # [N]
        sample_idx = torch.arange(len(conds))
        seeds = torch.tensor([derive_seed(self.seed, step, int(j)) for j in sample_idx])
        group_seeds = torch.tensor([derive_seed(self.seed, step, 1 << 20, int(gid)) for gid in group_ids])
        return SampleBatch(conds, group_ids, seeds, group_seeds, step)

    def local_batch(self, step: int) -> SampleBatch:
        full = self.global_batch(step)
        per = self.batch_size // self.world_size
        sl = slice(self.rank * per, (self.rank + 1) * per)
        return SampleBatch(full.conds[sl], full.group_ids[sl], full.seeds[sl], full.group_seeds[sl], step)


def fixed_eval_batch(prompts: list, group_size: int, seed: int, rank: int = 0, world_size: int = 1) -> SampleBatch:
    """Held-out prompts with fixed seeds (independent of the training step), this rank's share."""
    conds = [p for p in prompts for _ in range(group_size)]
    group_ids = torch.arange(len(prompts)).repeat_interleave(group_size)
    seeds = torch.tensor([derive_seed(seed, 999_983, j) for j in range(len(conds))])
    group_seeds = torch.tensor([derive_seed(seed, 999_979, int(g)) for g in group_ids])
    share = list(range(rank, len(conds), world_size))
    sel: Tensor = torch.tensor(share, dtype=torch.long)
    return SampleBatch([conds[i] for i in share], group_ids[sel], seeds[sel], group_seeds[sel], -1)
