"""The forward process of flow models, for regression objectives on clean samples (AWM, DiffusionNFT).

No likelihoods and no trajectories: a rollout's clean latents `x0` are noised afresh, `x_t = (1 - t) x0 + t eps`
(rectified flow, sigmas from 1 = noise to 0 = data), and the velocity `v(x_t, t)` is regressed. The losses
themselves are core objectives (`mmgrpo.objectives`: `awm`, `nft`, which declare `consumes = "forward_process"`);
`FlowPolicy.forward_process` builds the tensors they consume from the pieces here: the times, the noising, the
velocity anchor to the base and DiffusionNFT's EMA old policy (its decay rising over training, `ema_decay`).

All math in fp32; tensors and scalars in, tensors out; latents `[n, ...]` of any rank.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor

from mmgrpo.objectives import awm_regression, nft_r, nft_regression, time_weight  # noqa: F401  (re-exported)


def _bcast(t: Tensor, x: Tensor) -> Tensor:
    """`[n]` -> `[n, 1, ..., 1]` with the rank of `x`."""
    return t.float().reshape(x.shape[0], *([1] * (x.dim() - 1)))


def _mean_over_sample(t: Tensor) -> Tensor:
    return t.mean(dim=tuple(range(1, t.dim())))


def noised(x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
    """The forward process `x_t = (1 - t) x0 + t eps` at per-sample times `t [n]` in (0, 1)."""
    tb = _bcast(t, x0)
    return (1 - tb) * x0.float() + tb * eps.float()


def sample_times(n: int, generator: torch.Generator | None = None, high_noise_bias: float = 1.0,
                 t_min: float = 0.02, t_max: float = 0.98) -> Tensor:
    """`[n]` training times in [t_min, t_max]: `t = u^(1 / (1 + bias))`, u ~ U(0, 1) (density ~ t^bias: bias 0
    is uniform, bias 1 is linear towards high noise, where a sample's composition is decided)."""
    if high_noise_bias < 0:
        raise ValueError(f"high_noise_bias must be >= 0; got {high_noise_bias}")
    u = torch.rand(n, generator=generator)
    return t_min + (t_max - t_min) * u ** (1.0 / (1.0 + high_noise_bias))


def velocity_kl(v: Tensor, v_ref: Tensor) -> Tensor:
    """`[n]` KL-style anchor of a forward-process objective to the base: `mean over dims (v - v_ref)^2`."""
    return _mean_over_sample((v.float() - v_ref.float().detach()) ** 2)


def ema_decay(step: int, rate: float = 0.001, cap: float = 0.5) -> float:
    """DiffusionNFT's old-policy decay, rising over training: `min(rate * step, cap)` (0 at the start: the
    old policy is the current one; later it lags, a slower-moving reference)."""
    if not (0 <= cap < 1 and rate >= 0):
        raise ValueError(f"ema_decay needs 0 <= cap < 1 and rate >= 0; got cap={cap}, rate={rate}")
    return min(rate * step, cap)


@torch.no_grad()
def ema_update(old: Iterable[Tensor], new: Iterable[Tensor], decay: float) -> None:
    """In place: `old <- decay * old + (1 - decay) * new` for each pair of tensors (the EMA old policy)."""
    old, new = list(old), list(new)
    if len(old) != len(new):
        raise ValueError(f"ema_update: {len(old)} old tensors for {len(new)} new ones")
    if not 0 <= decay <= 1:
        raise ValueError(f"ema_update: decay must be in [0, 1]; got {decay}")
    for o, n in zip(old, new):
        if o.shape != n.shape:
            raise ValueError(f"ema_update: shapes {tuple(o.shape)} and {tuple(n.shape)} differ")
        o.mul_(decay).add_(n.detach().to(o.dtype), alpha=1 - decay)
