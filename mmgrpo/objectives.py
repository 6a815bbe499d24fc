"""Per-position policy objectives: `fn(logp, old_logp, advantages, mask, **params) -> (loss [N,T], stats)`.

`logp`, `old_logp` are [N, T] log-probs under the current and the behaviour policy, `mask` [N, T] bool,
`advantages` [N] (broadcast over positions) or dense [N, T]. The loss is per position and NOT yet
aggregated (see `mmgrpo.aggregation`); masked positions may hold any finite value. `stats` are detached
scalars over masked positions: clip_frac, ratio_min / ratio_mean / ratio_max.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .registry import Registry

OBJECTIVES: Registry = Registry("objective", positional=("logp", "old_logp", "advantages", "mask"))
get = OBJECTIVES.get
names = OBJECTIVES.names
register = OBJECTIVES.register


def broadcast_adv(adv: Tensor, like: Tensor) -> Tensor:
    """[N] or [N, T] advantages -> [N, T] (or [N, 1] broadcastable)."""
    return adv.unsqueeze(1) if adv.dim() == 1 else adv


def ratio_stats(ratio: Tensor, mask: Tensor, clipped: Tensor | None = None) -> dict:
    """Detached min/mean/max of the ratio and the clipped fraction over masked positions."""
    m = mask.bool()
    if not m.any():
        return {"clip_frac": 0.0, "ratio_min": 1.0, "ratio_mean": 1.0, "ratio_max": 1.0}
    r = ratio.detach().expand_as(m)[m]
    out = {"ratio_min": r.min().item(), "ratio_mean": r.mean().item(), "ratio_max": r.max().item()}
    out["clip_frac"] = clipped.detach().expand_as(m)[m].float().mean().item() if clipped is not None else 0.0
    return out


def clipped_surrogate(ratio: Tensor, adv: Tensor, eps_low: float, eps_high: float,
                      dual_clip: float | None = None, delta: float | None = None) -> tuple[Tensor, Tensor]:
    """-min(r*A, clip(r, 1-eps_low, 1+eps_high)*A) with optional two-sided delta and dual clip.

    Returns (loss, clipped) where `clipped` marks positions whose gradient the clip removed.
    """
    r_unclipped = ratio.clamp(max=delta) if delta is not None else ratio       # INTELLECT-2 two-sided
    surr1 = r_unclipped * adv
    surr2 = ratio.clamp(1 - eps_low, 1 + eps_high) * adv
    loss = -torch.minimum(surr1, surr2)
    clipped = surr2 < surr1
    if dual_clip is not None:                                                 # dual-clip PPO, A < 0 only
        bound = -dual_clip * adv
        loss = torch.where(adv < 0, torch.minimum(loss, bound), loss)
    return loss, clipped


@register("clip", "PPO/GRPO clipped surrogate; asymmetric eps (DAPO clip-higher), dual clip, two-sided delta",
          ref="PPO, GRPO, DAPO, INTELLECT-2")
def clip(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, eps_low: float = 0.2,
         eps_high: float | None = None, dual_clip: float | None = None,
         delta: float | None = None) -> tuple[Tensor, dict]:
    """Token-ratio clipped surrogate: -min(r A, clip(r, 1-eps_low, 1+eps_high) A).

    `eps_high` defaults to `eps_low`; `dual_clip` = c bounds the loss of A<0 samples by -c*A (c=3 typical);
    `delta` caps the unclipped ratio, r = min(r, delta), before the min (INTELLECT-2 two-sided clipping).
    """
    eps_high = eps_low if eps_high is None else eps_high
    ratio = torch.exp(logp - old_logp)                                        # [N, T]
    adv = broadcast_adv(advantages, logp)                                     # [N, 1] or [N, T]
    loss, clipped = clipped_surrogate(ratio, adv, eps_low, eps_high, dual_clip, delta)
    return loss, ratio_stats(ratio, mask, clipped)


def sequence_log_ratio(logp: Tensor, old_logp: Tensor, mask: Tensor) -> Tensor:
    """Length-normalized sequence log-ratio: sum_t (logp - old) m / sum_t m -> [N, 1]."""
    m = mask.to(logp.dtype)
    return ((logp - old_logp) * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp(min=1)


@register("gspo", "sequence-level ratio exp(mean_t log r_t) clipped per sequence; optional token-gradient form",
          ref="GSPO (Qwen)")
def gspo(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, eps_low: float = 3e-4,
         eps_high: float = 4e-4, token_form: bool = False) -> tuple[Tensor, dict]:
    """GSPO: s = exp(sum_t (logp-old) m / sum_t m), loss = -min(s A, clip(s) A) at every position.

    `token_form` (GSPO-token) uses log s_t = logp_t - sg(logp_t) + sg(log s): the same value as s, with
    the gradient of token t scaled by s, which allows per-token advantages. Both give the same gradient
    when advantages are per sequence and the loss is sequence-mean aggregated.
    """
    seq = sequence_log_ratio(logp, old_logp, mask)                            # [N, 1]
    if token_form:
        log_ratio = logp - logp.detach() + seq.detach()                       # [N, T]
    else:
        log_ratio = seq.expand_as(logp)                                       # [N, T]
    ratio = torch.exp(log_ratio)
    adv = broadcast_adv(advantages, logp)
    loss, clipped = clipped_surrogate(ratio, adv, eps_low, eps_high)
    return loss, ratio_stats(ratio, mask, clipped)


gspo.needs_full_sequence = True   # the sequence ratio needs every position in one forward pass


@register("sapo", "soft adaptive gate sigmoid(tau (r-1)) * 4/tau instead of a hard clip", ref="SAPO (S24)")
def sapo(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, tau_pos: float = 1.0,
         tau_neg: float = 1.05) -> tuple[Tensor, dict]:
    """SAPO: loss = -sigmoid(tau (r - 1)) * 4 / tau * A, tau = tau_pos if A > 0 else tau_neg.

    At r = 1 the gradient w.r.t. r is sigmoid'(0) * 4 = 1, the plain ratio's; far from r = 1 the gate
    saturates smoothly, so off-policy tokens fade instead of being cut.
    """
    ratio = torch.exp(logp - old_logp)
    adv = broadcast_adv(advantages, logp)
    tau = torch.where(adv > 0, torch.full_like(adv, tau_pos), torch.full_like(adv, tau_neg))
    loss = -torch.sigmoid(tau * (ratio - 1)) * (4.0 / tau) * adv
    # "clipped" here: the gate's slope fell below half of its value at r = 1
    gate_slope = 4 * torch.sigmoid(tau * (ratio - 1)) * (1 - torch.sigmoid(tau * (ratio - 1)))
    return loss, ratio_stats(ratio, mask, gate_slope < 0.5)


@register("cispo", "REINFORCE with a clipped, stop-gradient importance weight: -sg(min(r, eps_max)) A logp",
          ref="CISPO (MiniMax-M1)")
def cispo(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor,
          eps_max: float = 5.0) -> tuple[Tensor, dict]:
    """CISPO: loss = -sg(min(r, eps_max)) * A * logp; every token keeps a gradient (no clipping to zero)."""
    ratio = torch.exp(logp - old_logp)
    adv = broadcast_adv(advantages, logp)
    weight = ratio.clamp(max=eps_max).detach()
    loss = -weight * adv * logp
    return loss, ratio_stats(ratio, mask, ratio > eps_max)


# ---------------------------------------------------------------- forward-process (regression) objectives
# Objectives that declare `consumes = "forward_process"` regress a policy's clean samples instead of replaying
# log-probs: the trainer calls `policy.forward_process(rollout, generator, needs=fn.forward_inputs, ...)` and
# passes the dict it returns, `fn(fp, advantages, mask, **params) -> (loss [n], stats)`. For flows the dict
# holds, at K fresh draws of (eps, t) per sample: `v [n, K, *latent]` (current velocity, with gradient),
# `v_old` (the EMA old policy's, no gradient), `x0 [n, *latent]` (clean latents), `eps [n, K, *latent]`,
# `t [n, K]` (rectified flow x_t = (1 - t) x0 + t eps, velocity target eps - x0).

FORWARD_POSITIONAL = ("fp", "advantages", "mask")


def _bcast(t: Tensor, x: Tensor) -> Tensor:
    """`[n]` -> `[n, 1, ..., 1]` with the rank of `x`."""
    return t.float().reshape(x.shape[0], *([1] * (x.dim() - 1)))


def _mean_over_sample(t: Tensor) -> Tensor:
    return t.mean(dim=tuple(range(1, t.dim())))


def time_weight(t: Tensor, kind: str = "uniform") -> Tensor:
    """AWM's `w(t) [n]`: uniform (1, the plain flow-matching loss) or t (high noise counts more)."""
    if kind == "uniform":
        return torch.ones_like(t, dtype=torch.float32)
    if kind == "t":
        return t.float()
    raise ValueError(f"time weighting must be 'uniform' or 't'; got {kind!r}")


def awm_regression(v: Tensor, x0: Tensor, eps: Tensor, t: Tensor, adv: Tensor, weighting: str = "uniform") -> Tensor:
    """`[n]`: `A_i * w(t_i) * mean over dims of (v_i - (eps_i - x0_i))^2` (AWM, Xue et al. 2025).

    With every advantage 0 the loss is identically 0, so its gradient is exactly 0.
    """
    err = _mean_over_sample((v.float() - (eps.float() - x0.float())) ** 2)        # [n]
    return adv.float() * time_weight(t, weighting) * err


def nft_r(adv: Tensor, adv_clip_max: float) -> Tensor:
    """DiffusionNFT's optimality probability `r = clip(A / (2 A_max) + 1/2, 0, 1)` `[n]` (A clamped to +-A_max)."""
    if adv_clip_max <= 0:
        raise ValueError(f"adv_clip_max must be > 0; got {adv_clip_max}")
    a = adv.float().clamp(-adv_clip_max, adv_clip_max)
    return (a / (2 * adv_clip_max) + 0.5).clamp(0.0, 1.0)


def nft_regression(v: Tensor, v_old: Tensor, x0: Tensor, eps: Tensor, t: Tensor, adv: Tensor, beta: float = 1.0,
                   adv_clip_max: float = 5.0, adaptive_weight: bool = True) -> Tensor:
    """`[n]`: `(r |x0(v+) - x0|^2 / w+ + (1 - r) |x0(v-) - x0|^2 / w-) / b` (means over dims; DiffusionNFT,
    Zheng et al. 2025), `v+ = b v + (1 - b) v_old`, `v- = (1 + b) v_old - b v`, `x0(v) = x_t - t v`.

    Written as `v+- = v_old +- d` with `d = b (v - v_old)`; at `v == v_old` the two residuals are then bitwise
    equal, so with every advantage 0 (r = 1/2) the two halves' gradients cancel exactly. The division by `b`
    (as the reference) keeps the gradient's scale independent of `b`. `w+-` (adaptive_weight):
    `mean |x0(v+-) - x0|` per sample, clipped at 1e-5, without gradient; otherwise 1.
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0; got {beta}")
    x0f, tb = x0.float(), _bcast(t, x0)
    x_t = (1 - tb) * x0f + tb * eps.float()
    base = v_old.float().detach()
    d = beta * (v.float() - base)                                                  # [n, ...]
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


def _draws(fp: dict, advantages: Tensor) -> tuple[Tensor, ...]:
    """A forward-process dict's K draws per sample flattened to `n * K` rows: (v, x0, eps, t, adv)."""
    for key in ("v", "x0", "eps", "t"):
        if key not in fp:
            raise KeyError(f"a forward-process objective needs {key!r} in the policy's forward_process output")
    v, t = fp["v"], fp["t"]                                                         # [n, K, *], [n, K]
    n, k = t.shape
    if advantages.dim() != 1:
        raise ValueError(f"forward-process objectives take one advantage per sample [n]; got {tuple(advantages.shape)}")
    x0 = fp["x0"].unsqueeze(1).expand(n, k, *fp["x0"].shape[1:])                   # [n, K, *]
    flat = lambda x: x.reshape(n * k, *x.shape[2:])                                 # noqa: E731
    return flat(v), flat(x0), flat(fp["eps"]), t.reshape(n * k), advantages.float().repeat_interleave(k)


def _forward_stats(loss: Tensor, mask: Tensor, fp: dict) -> dict:
    m = mask.bool()
    out = {"fp_loss": loss.detach()[m].mean().item() if m.any() else 0.0}
    if "v_old" in fp and m.any():
        out["fp_v_old_dist"] = _mean_over_sample((fp["v"].detach() - fp["v_old"]) ** 2)[m].mean().item()
    return out


@register("awm", "Advantage Weighted Matching: advantage-weighted flow matching on a policy's clean samples",
          ref="AWM (Xue et al. 2025)", requires=(), positional=FORWARD_POSITIONAL)
def awm(fp: dict, advantages: Tensor, mask: Tensor, weighting: str = "uniform",
        positive_only: bool = False) -> tuple[Tensor, dict]:
    """`[n]`: the mean over the sample's K draws of `awm_regression` (`weighting`: 'uniform' or 't').

    `positive_only` keeps only `max(A, 0)`: flow matching on the group's better samples, never pushed away
    from the worse ones (reward-weighted regression; it cannot unlearn what the base draws well)."""
    if positive_only:
        advantages = advantages.clamp(min=0.0)
    v, x0, eps, t, adv = _draws(fp, advantages)
    n, k = fp["t"].shape
    loss = awm_regression(v, x0, eps, t, adv, weighting).reshape(n, k).mean(1)      # [n]
    return loss, _forward_stats(loss, mask, fp)


awm.consumes = "forward_process"
awm.forward_inputs = ("v",)


@register("nft", "DiffusionNFT: implicit positive / negative policies around an EMA old policy (CFG-free)",
          ref="DiffusionNFT (Zheng et al. 2025)", requires=(), positional=FORWARD_POSITIONAL)
def nft(fp: dict, advantages: Tensor, mask: Tensor, beta: float = 1.0, adv_clip_max: float = 5.0,
        adaptive_weight: bool = True) -> tuple[Tensor, dict]:
    """`[n]`: the mean over the sample's K draws of `nft_regression` against the old velocity `fp["v_old"]`."""
    if "v_old" not in fp:
        raise KeyError("objective 'nft' needs 'v_old' (the old policy's velocity) in the forward_process output")
    v, x0, eps, t, adv = _draws(fp, advantages)
    n, k = fp["t"].shape
    v_old = fp["v_old"].reshape(n * k, *fp["v_old"].shape[2:])
    loss = nft_regression(v, v_old, x0, eps, t, adv, beta, adv_clip_max, adaptive_weight).reshape(n, k).mean(1)
    return loss, _forward_stats(loss, mask, fp)


nft.consumes = "forward_process"
nft.forward_inputs = ("v", "v_old")
