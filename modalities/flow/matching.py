"""Forward-process objectives for flow models: regression on noised clean samples, weighted by advantages.

No likelihoods and no trajectories: a rollout's clean latents `x0` are noised afresh, `x_t = (1 - t) x0 + t eps`
(rectified flow, sigmas from 1 = noise to 0 = data), and the velocity `v(x_t, t)` is regressed. Two methods,
registered in `FORWARD_LOSSES` (each `fn(v, v_old, x0, eps, t, adv, **params) -> loss [n]`):

- `awm`, Advantage Weighted Matching (Xue et al. 2025, scxue/advantage_weighted_matching): the flow-matching
  loss weighted by the advantage, `A_i * w(t) * |v_theta(x_t, t) - (eps - x0)|^2`, averaged over the latent;
  samples drawn by the deterministic ODE (clean latents only), several `t` per sample biased to high noise.
- `nft`, DiffusionNFT (Zheng et al. 2025, NVlabs/DiffusionNFT): an implicit positive and negative policy
  around the old one, `v+ = b v_theta + (1 - b) v_old`, `v- = (1 + b) v_old - b v_theta`, loss
  `r |x0(v+) - x0|^2 / w+ + (1 - r) |x0(v-) - x0|^2 / w-` over `b`, with `x0(v) = x_t - t v`,
  `r = clip(A / (2 A_max) + 1/2, 0, 1)` and the adaptive weights `w = mean |x0(v) - x0|` (no gradient);
  the old policy is an EMA of the trained weights whose decay rises over training (`ema_decay`). CFG-free.

All math in fp32; tensors and scalars in, tensors out; latents `[n, ...]` of any rank.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import Tensor

from mmgrpo.registry import Registry

FORWARD_LOSSES: Registry[Callable[..., Tensor]] = Registry("flow forward-process loss")


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


def time_weight(t: Tensor, kind: str = "uniform") -> Tensor:
    """AWM's `w(t) [n]`: uniform (1, the plain flow-matching loss) or t (high noise counts more)."""
    if kind == "uniform":
        return torch.ones_like(t, dtype=torch.float32)
    if kind == "t":
        return t.float()
    raise ValueError(f"time weighting must be 'uniform' or 't'; got {kind!r}")


@FORWARD_LOSSES.register("awm", "Advantage Weighted Matching: advantage-weighted flow matching on clean samples",
                         "AWM")
def awm_loss(v: Tensor, v_old: Tensor | None, x0: Tensor, eps: Tensor, t: Tensor, adv: Tensor,
             weighting: str = "uniform", **_: object) -> Tensor:
    """`[n]`: `A_i * w(t_i) * mean over dims of (v_i - (eps_i - x0_i))^2` (AWM). `v_old` is unused.

    With every advantage 0 the loss is identically 0, so its gradient is exactly 0.
    """
    err = _mean_over_sample((v.float() - (eps.float() - x0.float())) ** 2)      # [n]
    return adv.float() * time_weight(t, weighting) * err


def nft_r(adv: Tensor, adv_clip_max: float) -> Tensor:
    """DiffusionNFT's optimality probability `r = clip(A / (2 A_max) + 1/2, 0, 1)` `[n]` (A clamped to +-A_max)."""
    if adv_clip_max <= 0:
        raise ValueError(f"adv_clip_max must be > 0; got {adv_clip_max}")
    a = adv.float().clamp(-adv_clip_max, adv_clip_max)
    return (a / (2 * adv_clip_max) + 0.5).clamp(0.0, 1.0)


@FORWARD_LOSSES.register("nft", "DiffusionNFT: implicit positive / negative policies around an EMA old policy",
                         "DiffusionNFT")
def nft_loss(v: Tensor, v_old: Tensor, x0: Tensor, eps: Tensor, t: Tensor, adv: Tensor, beta: float = 1.0,
             adv_clip_max: float = 5.0, adaptive_weight: bool = True, **_: object) -> Tensor:
    """`[n]`: `(r |x0(v+) - x0|^2 / w+ + (1 - r) |x0(v-) - x0|^2 / w-) / b` (means over dims; DiffusionNFT).

    Written as `v+- = v_old +- d` with `d = b (v - v_old)`, which is `b v + (1 - b) v_old` and
    `(1 + b) v_old - b v`; at `v == v_old` the two residuals are then bitwise equal, so with every
    advantage 0 (r = 1/2) the two halves' gradients cancel exactly. The division by `b` (as the reference)
    keeps the gradient's scale independent of `b`. `w+-` (adaptive_weight): `mean |x0(v+-) - x0|` per
    sample, clipped at 1e-5, without gradient; otherwise 1.
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0; got {beta}")
    x0f, tb = x0.float(), _bcast(t, x0)
    x_t = noised(x0f, eps, t)
    d = beta * (v.float() - v_old.float().detach())                               # [n, ...]
    base = v_old.float().detach()
    x0_pos = x_t - tb * (base + d)                                                 # x0(v+)
    x0_neg = x_t - tb * (base - d)                                                 # x0(v-)
    if adaptive_weight:
        with torch.no_grad():
            w_pos = _mean_over_sample((x0_pos - x0f).abs()).clamp(min=1e-5)      # [n]
            w_neg = _mean_over_sample((x0_neg - x0f).abs()).clamp(min=1e-5)
    else:
        w_pos = w_neg = torch.ones(x0.shape[0], device=x0.device)
    r = nft_r(adv, adv_clip_max)                                                   # [n]
    pos = _mean_over_sample((x0_pos - x0f) ** 2) / w_pos
    neg = _mean_over_sample((x0_neg - x0f) ** 2) / w_neg
    return (r * pos + (1 - r) * neg) / beta


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


def get(name: str) -> Callable[..., Tensor]:
    """The forward-process loss registered as `name` (awm, nft); unknown names list the valid ones."""
    return FORWARD_LOSSES.get(name)
