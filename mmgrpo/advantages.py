"""Advantage estimators: `fn(rewards [N], group_ids [N], **params) -> advantages [N]`, by name.

Estimators assume finite rewards; the trainer masks NaN/inf rewards before calling them. Group ids
are arbitrary integers (assigned by the group sampler, never derived from prompt strings).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .registry import Registry

ADVANTAGES: Registry = Registry("advantage estimator", positional=("rewards", "group_ids"))
get = ADVANTAGES.get
names = ADVANTAGES.names
register = ADVANTAGES.register


def group_index(group_ids: Tensor) -> tuple[Tensor, int]:
    """Map arbitrary group ids [N] to dense indices 0..K-1; returns (index [N], K)."""
    uniq, inv = torch.unique(group_ids, return_inverse=True)
    return inv, uniq.numel()


def group_mean_std(values: Tensor, group_ids: Tensor, unbiased: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """Per-sample group mean, std and size, vectorized with scatter-add.

    values [N] float; returns (mean [N], std [N], count [N]). `unbiased` uses the N-1 denominator
    (TRL convention); the default population std matches Flow-GRPO's per-prompt stat tracker.
    """
    idx, k = group_index(group_ids)
    v = values.double()
    count = torch.zeros(k, dtype=torch.float64, device=v.device).scatter_add_(0, idx, torch.ones_like(v))
    total = torch.zeros(k, dtype=torch.float64, device=v.device).scatter_add_(0, idx, v)
    mean = total / count                                             # [K]
    sq = torch.zeros(k, dtype=torch.float64, device=v.device).scatter_add_(0, idx, (v - mean[idx]) ** 2)
    denom = (count - 1).clamp(min=1) if unbiased else count
    std = (sq / denom).sqrt()                                        # [K]
    return mean[idx].to(values.dtype), std[idx].to(values.dtype), count[idx].to(values.dtype)


def zero_std_mask(rewards: Tensor, group_ids: Tensor, tol: float = 1e-8) -> Tensor:
    """[N] bool: True for samples whose group has identical rewards (no learning signal)."""
    _, std, _ = group_mean_std(rewards, group_ids)
    return std <= tol


@register("grpo", "group-relative: (R - group mean) / (group std + eps)", ref="GRPO (DeepSeekMath)")
def grpo(rewards: Tensor, group_ids: Tensor, eps: float = 1e-4, unbiased: bool = False) -> Tensor:
    """GRPO: A = (R - mean_group) / (std_group + eps)."""
    mean, std, _ = group_mean_std(rewards, group_ids, unbiased)
    return (rewards - mean) / (std + eps)


@register("grpo_batch_std", "(R - group mean) / (std of the whole gathered batch + eps)",
          ref="Flow-GRPO SD3 default; LitePPO")
def grpo_batch_std(rewards: Tensor, group_ids: Tensor, eps: float = 1e-4, unbiased: bool = False) -> Tensor:
    """Group-mean baseline, batch-std scale: A = (R - mean_group) / (std_batch + eps)."""
    mean, _, _ = group_mean_std(rewards, group_ids)
    std = rewards.std(unbiased=unbiased) if rewards.numel() > 1 else rewards.new_zeros(())
    return (rewards - mean) / (std + eps)


@register("dr_grpo", "group mean baseline without std normalization", ref="Dr. GRPO")
def dr_grpo(rewards: Tensor, group_ids: Tensor) -> Tensor:
    """Dr. GRPO: A = R - mean_group (no division by the std, which biases towards easy/hard groups)."""
    mean, _, _ = group_mean_std(rewards, group_ids)
    return rewards - mean


@register("rloo", "leave-one-out baseline: R - mean of the other G-1 members", ref="RLOO")
def rloo(rewards: Tensor, group_ids: Tensor) -> Tensor:
    """RLOO: A_i = R_i - (sum_group - R_i) / (G - 1); a group of one gets 0."""
    mean, _, count = group_mean_std(rewards, group_ids)
    others = (mean * count - rewards) / (count - 1).clamp(min=1)
    return torch.where(count > 1, rewards - others, torch.zeros_like(rewards))


def clip_advantages(adv: Tensor, max_abs: float | None) -> Tensor:
    """Clamp advantages to [-max_abs, max_abs] (Flow-GRPO uses 5); None leaves them as they are."""
    return adv if max_abs is None else adv.clamp(-max_abs, max_abs)


def normalize_then_sum(rewards: Tensor, group_ids: Tensor, weights: Tensor, eps: float = 1e-4) -> Tensor:
    """Multi-reward advantage: z-score each reward within its group, weighted sum, then z-score over the batch.

    rewards [N, K], weights [K] -> advantages [N]. Known in TRL as "GDPO" (not the diffusion-LM GDPO of S32).
    A NaN entry (reward not applicable to that sample) contributes 0 to the sum.
    """
    parts = []
    for k in range(rewards.shape[1]):
        r = rewards[:, k]
        ok = torch.isfinite(r)
        z = torch.zeros_like(r)
        if ok.any():
            z[ok] = grpo(r[ok], group_ids[ok], eps=eps)
        parts.append(z * weights[k])
    total = torch.stack(parts, 1).sum(1)                             # [N]
    std = total.std(unbiased=False) if total.numel() > 1 else total.new_zeros(())
    return (total - total.mean()) / (std + eps)
