"""The seed papers' ratios and trust regions, registered into `mmgrpo.objectives` by name.

Each is `fn(logp [N,T], old_logp [N,T], advantages [N] or [N,T], mask [N,T], <context>, **params) -> (loss [N,T],
stats)`, the loss per position and not yet aggregated. Objectives whose ratio spans positions (segments,
prefixes, sequences) set `needs_full_sequence = True`: the trainer then refuses time chunking.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..objectives import broadcast_adv, clipped_surrogate, ratio_stats, register, sequence_log_ratio
from .segments import segment_mean


def _seq_mean(values: Tensor, mask: Tensor) -> Tensor:
    """[N, T] -> [N, 1] mean over valid positions (0 for an empty row)."""
    m = mask.to(values.dtype)
    return (values * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp(min=1)


def _full_sequence(fn):
    fn.needs_full_sequence = True
    return fn


# ------------------------------------------------------------------------- segment ratios (S8, S9)

@register("segment_clip", "ratio = geometric mean of token ratios within each segment (ranked item, sentence), "
          "clipped per segment", ref="S8 Rank-GRPO",
          requires=("segment_ids",))
@_full_sequence
def segment_clip(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, segment_ids: Tensor,
                 eps_low: float = 0.2, eps_high: float | None = None) -> tuple[Tensor, dict]:
    """Segment-level ratio: s_t = exp(mean_{u in seg(t)} (logp_u - old_u)), loss = -min(s A, clip(s) A).

    Between the token ratio (segments of one token: the `clip` objective) and the sequence ratio (one
    segment: `gspo`). Rank-GRPO uses one segment per ranked item.

    Use when: outputs are lists or sentences whose units carry the reward (recommendations, ranked items,
    steps), and the token ratio is too noisy while the sequence ratio discards too much.
    """
    eps_high = eps_low if eps_high is None else eps_high
    ratio = torch.exp(segment_mean(logp - old_logp, segment_ids, mask))                  # [N, T]
    loss, clipped = clipped_surrogate(ratio, broadcast_adv(advantages, logp), eps_low, eps_high)
    return loss, ratio_stats(ratio, mask, clipped)


@register("sspo", "sentence-level ratio with entropy-adaptive clip bounds (wider for uncertain segments)",
          ref="S9 SSPO",
          requires=("segment_ids", "entropy"))
@_full_sequence
def sspo(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, segment_ids: Tensor, entropy: Tensor,
         eps_low: float = 0.2, eps_high: float | None = None, scale_min: float = 0.5,
         scale_max: float = 2.0) -> tuple[Tensor, dict]:
    """SSPO: the segment (sentence) ratio of `segment_clip`, with bounds eps * k_seg,
    k_seg = clamp(mean entropy of the segment / mean entropy of the sequence, scale_min, scale_max).

    High-entropy sentences get a wider trust region (room to explore), low-entropy ones a narrower one. The
    normalizer is the sample's own mean entropy, so the bounds do not depend on how the batch is split.

    Use when: as `segment_clip`, and entropy collapse or over-confident updates on low-entropy text hurt.
    """
    eps_high = eps_low if eps_high is None else eps_high
    m = mask.bool()
    ratio = torch.exp(segment_mean(logp - old_logp, segment_ids, mask))                  # [N, T]
    h = entropy.to(logp.dtype).detach()
    h_seg = segment_mean(h, segment_ids, mask)                                           # [N, T]
    h_seq = _seq_mean(h, mask)                                                           # [N, 1]
    k = torch.where(h_seq > 0, h_seg / h_seq.clamp(min=1e-12), torch.ones_like(h_seg)).clamp(scale_min, scale_max)
    k = torch.where(m, k, torch.ones_like(k))
    loss, clipped = clipped_surrogate(ratio, broadcast_adv(advantages, logp), eps_low * k, eps_high * k)
    stats = ratio_stats(ratio, mask, clipped)
    stats["clip_scale_mean"] = k[m].mean().item() if m.any() else 1.0
    return loss, stats


# ----------------------------------------------------------------------------------------------- CTPO (S10)

@register("ctpo", "cumulative token ratio exp(sum_{s<=t} log r_s), clipped in log space with bounds growing "
          "like sqrt(t)", ref="S10 CTPO")
@_full_sequence
def ctpo(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, eps_low: float = 0.2,
         eps_high: float | None = None, growth: float = 0.5, detach_prefix: bool = True) -> tuple[Tensor, dict]:
    """CTPO: c_t = sum_{s<=t} m_s (logp_s - old_s), loss_t = -min(e^{c_t} A, e^{clip(c_t, -eps_low k_t^g,
    eps_high k_t^g)} A) with k_t the count of valid positions up to t (1 at the first) and g = `growth`.

    The cumulative ratio corrects each token's gradient for the shift of its prefix's distribution, with
    less variance than the full-sequence ratio; the log-space bounds grow with position (g = 0.5: ~sqrt(t),
    the natural growth of a sum of t log-ratios). With `detach_prefix` (the token-level policy-gradient form)
    the prefix part of c_t is a stop-gradient weight, so token t's gradient is e^{c_t} A grad logp_t. At the
    first position the ratio is the token ratio.

    Use when: long generations where the token ratio ignores the prefix mismatch (tool-integrated reasoning)
    and the sequence ratio is too noisy.
    """
    eps_high = eps_low if eps_high is None else eps_high
    m = mask.to(logp.dtype)
    d = (logp - old_logp) * m                                                            # [N, T]
    c = torch.cumsum(d, 1)
    if detach_prefix:
        c = (c - d).detach() + d
    k = torch.cumsum(m, 1).clamp(min=1)                                                  # [N, T]
    lo, hi = -eps_low * k ** growth, eps_high * k ** growth
    adv = broadcast_adv(advantages, logp)
    surr1 = torch.exp(c) * adv
    surr2 = torch.exp(torch.maximum(torch.minimum(c, hi), lo)) * adv
    loss = -torch.minimum(surr1, surr2)
    return loss, ratio_stats(torch.exp(c), mask, surr2 < surr1)


# ----------------------------------------------------------------------------------------------- DHPO (S12)

def _hybrid(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, w: Tensor | float, eps_low: float,
            eps_high: float | None, seq_eps_low: float, seq_eps_high: float | None) -> tuple[Tensor, dict]:
    eps_high = eps_low if eps_high is None else eps_high
    seq_eps_high = seq_eps_low if seq_eps_high is None else seq_eps_high
    r_tok = torch.exp(logp - old_logp)                                                   # [N, T]
    r_seq = torch.exp(sequence_log_ratio(logp, old_logp, mask))                          # [N, 1]
    mixed = w * r_tok + (1 - w) * r_seq
    mixed_clipped = w * r_tok.clamp(1 - eps_low, 1 + eps_high) + (1 - w) * r_seq.clamp(1 - seq_eps_low, 1 + seq_eps_high)
    adv = broadcast_adv(advantages, logp)
    surr1, surr2 = mixed * adv, mixed_clipped * adv
    loss = -torch.minimum(surr1, surr2)
    return loss, ratio_stats(mixed, mask, surr2 < surr1)


@register("dhpo", "token and sequence ratios each clipped in its own trust region, then averaged",
          ref="S12 DHPO (averaged mixing)")
@_full_sequence
def dhpo(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, token_weight: float = 0.5,
         eps_low: float = 0.2, eps_high: float | None = None, seq_eps_low: float = 0.05,
         seq_eps_high: float | None = None) -> tuple[Tensor, dict]:
    """DHPO: r = w r_tok + (1-w) r_seq, r_clip = w clip(r_tok, eps) + (1-w) clip(r_seq, seq_eps),
    loss = -min(r A, r_clip A). w = 1 is the token clip (`clip`), w = 0 the sequence clip (`gspo`).

    Branch-specific clipping keeps an outlier in either branch from dominating. The sequence branch's
    trust region is narrower (seq_eps 0.05) because a length-normalized ratio moves less than a token's.

    Use when: neither GRPO's token ratio (unstable) nor GSPO's sequence ratio (coarse credit) suits alone.
    """
    return _hybrid(logp, old_logp, advantages, mask, token_weight, eps_low, eps_high, seq_eps_low, seq_eps_high)


@register("dhpo_entropy", "DHPO with an entropy-guided weight: uncertain tokens lean on the token ratio",
          ref="S12 DHPO (entropy-guided mixing)",
          requires=("entropy",))
@_full_sequence
def dhpo_entropy(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, entropy: Tensor,
                 eps_low: float = 0.2, eps_high: float | None = None, seq_eps_low: float = 0.05,
                 seq_eps_high: float | None = None) -> tuple[Tensor, dict]:
    """DHPO with w_t = clamp(H_t / (2 mean_t H), 0, 1): a token of average entropy mixes half and half;
    high-entropy (decision) tokens get token-level credit, confident ones follow the sequence ratio.

    Use when: as `dhpo`, letting the policy's uncertainty pick the granularity per token.
    """
    h = entropy.to(logp.dtype).detach()
    h_seq = _seq_mean(h, mask)                                                           # [N, 1]
    w = torch.where(h_seq > 0, h / (2 * h_seq.clamp(min=1e-12)), torch.full_like(h, 0.5)).clamp(0, 1)
    loss, stats = _hybrid(logp, old_logp, advantages, mask, w, eps_low, eps_high, seq_eps_low, seq_eps_high)
    m = mask.bool()
    stats["token_weight_mean"] = w[m].mean().item() if m.any() else 0.5
    return loss, stats


# ------------------------------------------------------------------------------------------ Hölder (S31)

def holder_log_ratio(logp: Tensor, old_logp: Tensor, mask: Tensor, p: float) -> Tensor:
    """log of the power mean (mean_t r_t^p)^(1/p) over valid positions -> [N, 1]; p -> 0 is the geometric
    mean (|p| < 1e-6 uses it exactly). Computed with logsumexp in float64: for small p the numerator
    lse - log n is of order p, and float32 would lose it to cancellation."""
    m = mask.bool()
    lr = (logp - old_logp).double()
    n = m.sum(1, keepdim=True).clamp(min=1).double()
    if abs(p) < 1e-6:
        return ((lr * m).sum(1, keepdim=True) / n).to(logp.dtype)
    z = torch.where(m, p * lr, torch.full_like(lr, -math.inf))
    lse = torch.logsumexp(z, 1, keepdim=True)
    has = m.any(1, keepdim=True)
    lse = torch.where(has, lse, torch.zeros_like(lse))                                  # empty rows: ratio 1
    return torch.where(has, (lse - torch.log(n)) / p, torch.zeros_like(lse)).to(logp.dtype)


@register("holder", "sequence ratio = Hölder (power) mean of token ratios with exponent p (schedulable)",
          ref="S31 HölderPO")
@_full_sequence
def holder(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, p: float = 1.0, eps_low: float = 0.2,
           eps_high: float | None = None) -> tuple[Tensor, dict]:
    """HölderPO: s = (mean_t r_t^p)^(1/p), loss = -min(s A, clip(s) A) at every position.

    p = 1 is the arithmetic mean of token ratios, p -> 0 the geometric mean (GSPO's ratio), larger p
    concentrates the gradient on the tokens that moved most (amplifies sparse signals), smaller p bounds its
    variance. Anneal p with a schedule, e.g. `p: {schedule: linear, start: 2.0, end: 0.0}`.

    Use when: GSPO is stable but slow and GRPO fast but collapses; anneal from concentration to stability.
    """
    eps_high = eps_low if eps_high is None else eps_high
    ratio = torch.exp(holder_log_ratio(logp, old_logp, mask, p)).expand_as(logp)         # [N, T]
    loss, clipped = clipped_surrogate(ratio, broadcast_adv(advantages, logp), eps_low, eps_high)
    stats = ratio_stats(ratio, mask, clipped)
    stats["holder_p"] = float(p)
    return loss, stats


# ----------------------------------------------------------------------------------------------- ETR (S41)

@register("etr", "elastic trust region: clip range widened by |advantage| (micro) and group reward std (macro)",
          ref="S41 ETR",
          requires=("group_reward_std",))
def etr(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, eps_low: float = 0.2,
        eps_high: float | None = None, micro: float = 1.0, macro: float = 0.0, reward_range: float = 1.0,
        group_reward_std: Tensor | None = None) -> tuple[Tensor, dict]:
    """ETR: token clip with bounds eps * (1 + micro |A| / (1 + |A|)) * (1 + macro nu_g),
    nu_g = clamp(std of the group's rewards / (reward_range / 2), 0, 1).

    Micro: confident, high-|A| samples get a wider region (faster learning from them); the factor stays
    below 1 + micro. Macro: groups of middling success (largest reward variance, the "learning zone") get
    a larger update budget than nearly solved or nearly hopeless ones. The macro term needs the trainer
    context `group_reward_std`; with micro = macro = 0 this is `clip`.

    Use when: advantage magnitudes and group variances differ a lot and one static trust region either
    wastes strong signals or lets noise through.
    """
    eps_high = eps_low if eps_high is None else eps_high
    adv = broadcast_adv(advantages, logp)
    a = adv.detach().abs()
    factor = 1 + micro * a / (1 + a)
    if macro:
        if group_reward_std is None:
            raise ValueError("etr: macro > 0 needs the trainer context 'group_reward_std' (the std of each sample's "
                             "group rewards), which this trainer does not pass; set macro: 0")
        nu = (group_reward_std.to(logp.dtype) / (reward_range / 2)).clamp(0, 1).view(-1, 1)
        factor = factor * (1 + macro * nu)
    ratio = torch.exp(logp - old_logp)
    loss, clipped = clipped_surrogate(ratio, adv, eps_low * factor, eps_high * factor)
    stats = ratio_stats(ratio, mask, clipped)
    stats["clip_scale_mean"] = factor.expand_as(logp)[mask.bool()].mean().item() if mask.any() else 1.0
    return loss, stats


# -------------------------------------------------------------------------------- NGRPO asymmetric (S28)

@register("asym_clip", "clip range chosen by the advantage's sign: looser for positive, tighter for negative",
          ref="S28 NGRPO asymmetric clipping")
def asym_clip(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, eps_pos: float = 0.3,
              eps_neg: float = 0.15) -> tuple[Tensor, dict]:
    """Token clip with [1 - e, 1 + e], e = eps_pos where A > 0 and eps_neg where A <= 0.

    Unlike DAPO's clip-higher (which widens the upper bound for every sample), this relaxes positive samples
    on both sides and constrains negative ones, stabilizing the extra negative pressure of `ngrpo`.

    Use when: with `ngrpo`, or whenever negative samples dominate the update.
    """
    adv = broadcast_adv(advantages, logp)
    e = torch.where(adv > 0, torch.full_like(adv, eps_pos), torch.full_like(adv, eps_neg))
    ratio = torch.exp(logp - old_logp)
    loss, clipped = clipped_surrogate(ratio, adv, e, e)
    return loss, ratio_stats(ratio, mask, clipped)


# ------------------------------------------------------------------------------------------- Reg-GRPO (S33)

@register("reg_grpo", "no clip, no min: regress beta x (length-normalized log-ratio) onto the advantage",
          ref="S33 Reg-GRPO (DeepVideo-R1)")
@_full_sequence
def reg_grpo(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor,
             beta: float = 10.0) -> tuple[Tensor, dict]:
    """Reg-GRPO, the form chosen here: loss_i = (beta l_i - A_i)^2 / (2 beta) at every valid position, with
    l_i = sum_t m (logp - old) / sum_t m the sequence's length-normalized log-ratio.

    The policy's own log-ratio is the advantage predictor; the regression replaces clipping and the min.
    Its fixed point l_i = A_i / beta is an implicit trust region (beta larger = smaller steps), and at the
    behaviour policy (l = 0) its gradient is exactly -A grad l_i, the policy gradient of the sequence-mean
    log-likelihood, so it starts as plain GRPO. The paper's group-centring of the predictor is not applied:
    group-normalized targets are already centred, and objectives see micro-batches that may split groups.

    Use when: clipping's dead zones waste signal (vanishing advantages, video LLMs), and a smooth
    regression towards the advantage is preferred.
    """
    if beta <= 0:
        raise ValueError(f"reg_grpo: beta must be > 0, got {beta}")
    ell = sequence_log_ratio(logp, old_logp, mask)                                      # [N, 1]
    adv = broadcast_adv(advantages, logp)
    loss = (beta * ell - adv) ** 2 / (2 * beta)
    loss = loss.expand_as(logp)
    return loss, ratio_stats(torch.exp(ell), mask, None)


# ----------------------------------------------------------------------------------------------- LLDS (S59)

@register("llds", "clipped surrogate plus a likelihood-preserving penalty on the tokens of sequences whose "
          "likelihood fell", ref="S59 LLDS")
@_full_sequence
def llds(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, eps_low: float = 0.2,
         eps_high: float | None = None, lam: float = 0.1, positive_only: bool = False) -> tuple[Tensor, dict]:
    """LLDS: loss = clip loss + lam * g_i * 1[logp_t < old_t] * (old_t - logp_t).

    g_i = 1 when the sequence's total log-likelihood fell below the behaviour policy's (sum_t m (logp - old)
    < 0), so the regularizer is off while likelihood holds and then acts only on the tokens that lost
    probability. `positive_only` restricts it to A > 0 (correct answers), where a falling likelihood is
    never wanted. lam = 0 is `clip`.

    Use when: likelihoods of all answers drift down during training (lazy likelihood displacement,
    tool-integrated RL) and the run heads for collapse.
    """
    eps_high = eps_low if eps_high is None else eps_high
    ratio = torch.exp(logp - old_logp)
    adv = broadcast_adv(advantages, logp)
    base, clipped = clipped_surrogate(ratio, adv, eps_low, eps_high)
    m = mask.to(logp.dtype)
    with torch.no_grad():
        seq_fell = ((logp - old_logp) * m).sum(1, keepdim=True) < 0                    # [N, 1]
        gate = seq_fell & (logp < old_logp) & mask.bool()
        if positive_only:
            gate = gate & (adv > 0)
    reg = lam * gate.to(logp.dtype) * (old_logp - logp)
    stats = ratio_stats(ratio, mask, clipped)
    stats["llds_frac"] = gate.float()[mask.bool()].mean().item() if mask.any() else 0.0
    return base + reg, stats
