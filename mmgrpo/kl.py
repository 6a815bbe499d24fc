"""KL estimators on log-probs: `fn(logp [N,T], ref_logp [N,T]) -> [N,T]` (Schulman's k1, k2, k3)."""

from __future__ import annotations

import torch
from torch import Tensor

from .registry import Registry

KL: Registry = Registry("KL estimator")
get = KL.get
names = KL.names


@KL.register("k1", "log ratio logp - ref (unbiased, high variance, can be negative)")
def k1(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k1 = logp - ref."""
    return logp - ref_logp


@KL.register("k2", "0.5 (logp - ref)^2 (biased, low variance)")
def k2(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k2 = 0.5 * (logp - ref)^2."""
    return 0.5 * (logp - ref_logp) ** 2


@KL.register("k3", "exp(ref - logp) - (ref - logp) - 1 (unbiased, non-negative; GRPO default)")
def k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k3 = exp(ref - logp) - (ref - logp) - 1."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1
