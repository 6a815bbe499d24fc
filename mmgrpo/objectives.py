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
