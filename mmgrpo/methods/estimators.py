"""The seed papers' advantage estimators, registered into `mmgrpo.advantages` by name.

Each is `fn(rewards [N], group_ids [N], <declared inputs>, **params) -> [N] or dense [N, T]`; rollout fields
(entropy, token_ids, segment_ids, ...) are declared in `requires=` at registration (see `mmgrpo.inputs`). Estimators that
give identical-reward groups a signal carry `needs_zero_std_keep = True`: run them with
`advantage.zero_std: keep`, or the trainer masks exactly the groups they were built for.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..advantages import group_index, group_mean_std, grpo, register
from .segments import segment_end_values, segment_index
from .similarity import SIMILARITIES
from .tracker import ValueTracker, prompt_key
from .tree import branch_td


def _seq_mean(values: Tensor, mask: Tensor) -> Tensor:
    """[N, T] -> [N] mean over valid positions (0 for an empty sample)."""
    m = mask.to(values.dtype)
    return (values * m).sum(1) / m.sum(1).clamp(min=1)


def _dense(adv: Tensor, mask: Tensor) -> Tensor:
    """[N] -> [N, T] broadcast, zero where masked."""
    return torch.where(mask.bool(), adv.unsqueeze(1).expand(mask.shape), torch.zeros((), dtype=adv.dtype))


# ----------------------------------------------------------------------------------------------- NGRPO (S28)

@register("ngrpo", "group stats include one virtual max-reward sample, so all-wrong groups get negative advantages",
          ref="S28 NGRPO")
def ngrpo(rewards: Tensor, group_ids: Tensor, max_reward: float = 1.0, eps: float = 1e-4) -> Tensor:
    """NGRPO advantage calibration: A = (R - mean') / (std' + eps) over the group plus one virtual sample of
    reward `max_reward` (population std over G + 1 values).

    An all-wrong group thus gets equal, negative, non-zero advantages, and an all-max group gets zeros. Pair
    it with `asym_clip` (NGRPO's asymmetric clipping) and `advantage.zero_std: keep`.

    Use when: many groups fail completely (hard prompts) and their samples should still be pushed down.
    """
    idx, k = group_index(group_ids)
    r = rewards.double()
    count = torch.zeros(k, dtype=torch.float64).scatter_add_(0, idx, torch.ones_like(r)) + 1     # [K] G + 1
    total = torch.zeros(k, dtype=torch.float64).scatter_add_(0, idx, r) + max_reward
    mean = total / count
    sq = torch.zeros(k, dtype=torch.float64).scatter_add_(0, idx, (r - mean[idx]) ** 2) + (max_reward - mean) ** 2
    std = (sq / count).sqrt()
    return ((r - mean[idx]) / (std[idx] + eps)).to(rewards.dtype)


ngrpo.needs_zero_std_keep = True


# ------------------------------------------------------------------------------------- Stratified GRPO (S53)

@register("stratified", "normalize within strata of a group (stratum ids), blended with the group-global advantage",
          ref="S53 Stratified GRPO (SAN)",
          requires=("stratum_ids",))
def stratified(rewards: Tensor, group_ids: Tensor, stratum_ids: Tensor, alpha: float = 0.5, eps: float = 1e-4,
               unbiased: bool = False) -> Tensor:
    """Stratified Advantage Normalization: A = alpha * A_strat + (1 - alpha) * A_global.

    A_strat normalizes within (group, stratum) cells (a stratum of one sample gets 0); A_global is GRPO over
    the whole group. alpha = 1 is pure SAN; the paper blends for finite-sample stability (0.5 chosen here,
    the paper's value is not in its abstract).

    Use when: a group mixes structurally different trajectories (number of tool calls, search hops, answer
    format) whose reward levels differ for reasons unrelated to quality.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"stratified: alpha must lie in [0, 1], got {alpha}")
    _, cell = torch.unique(torch.stack([group_ids.long(), stratum_ids.long()], 1), dim=0, return_inverse=True)
    a_strat = grpo(rewards, cell, eps, unbiased)
    a_glob = grpo(rewards, group_ids, eps, unbiased)
    return alpha * a_strat + (1 - alpha) * a_glob


# ------------------------------------------------------------------------------------------------- SPO (S35)

@register("spo", "single-stream: a persistent per-prompt value tracker is the baseline, advantages normalized "
          "over the whole batch", ref="S35 SPO",
          requires=("conds", "log_probs", "mask"))
class SingleStreamValue:
    """SPO: A_i = R_i - v(x_i) with v the tracker's value of prompt x_i BEFORE this batch, then
    A = (A - mean_batch) / (std_batch + eps) (centering optional); then the tracker absorbs the batch.

    The tracker (see `mmgrpo.methods.tracker`) forgets a prompt's old rewards faster when the policy moved
    more on it; its state is saved in checkpoints (methods.pt) and restored on resume. Works with any group
    size, including G = 1 (no groups at all); run it with `advantage.zero_std: keep`. Pair it with the
    `prioritized` collector for SPO's uncertainty-prioritized prompt sampling.

    Use when: groups are small or often degenerate (all equal), or rollouts should not wait for whole groups.
    """

    needs_zero_std_keep = True

    def __init__(self, rho_min: float = 0.875, rho_max: float = 0.96, d_half: float = 0.06, prior: float = 0.5,
                 prior_weight: float = 1.0, center: bool = True, eps: float = 1e-4):
        self.tracker = ValueTracker(rho_min, rho_max, d_half, prior, prior_weight)
        self.center, self.eps = center, eps

    def __call__(self, rewards: Tensor, group_ids: Tensor, conds: list, log_probs: Tensor, mask: Tensor) -> Tensor:
        keys = [prompt_key(c) for c in conds]
        base = torch.tensor([self.tracker.value(k) for k in keys], dtype=torch.float64)      # [N] before update
        adv = rewards.double() - base
        ll = _seq_mean(log_probs.double(), mask)                                              # [N]
        by_key: dict[str, list[int]] = {}
        for i, k in enumerate(keys):
            by_key.setdefault(k, []).append(i)
        for k, rows in by_key.items():           # insertion order = batch order: identical on every rank
            self.tracker.update(k, rewards[rows].double().tolist(), float(ll[rows].mean()))
        if self.center:
            adv = adv - adv.mean()
        std = adv.std(unbiased=False) if adv.numel() > 1 else adv.new_zeros(())
        return (adv / (std + self.eps)).to(rewards.dtype)

    def state_dict(self) -> dict:
        return self.tracker.state_dict()

    def load_state_dict(self, sd: dict) -> None:
        self.tracker.load_state_dict(sd)


# ----------------------------------------------------------------------------------- unlikeliness (S50)

@register("unlikeliness", "raise the reward of rewarded samples the policy found unlikely (rank by likelihood)",
          ref="S50 Rewarding the Unlikely",
          requires=("seq_log_likelihood",))
def unlikeliness(rewards: Tensor, group_ids: Tensor, seq_log_likelihood: Tensor, beta: float = 0.5,
                 min_reward: float = 0.0, eps: float = 1e-4, unbiased: bool = False) -> Tensor:
    """Unlikeliness reward, then GRPO: r'_i = r_i (1 - beta (G - 1 - rank_i) / G) for r_i > min_reward.

    rank_i in 0..G-1 orders the group by sequence log-likelihood, 0 = most likely (ties: earlier sample
    first), so the least likely correct sample keeps its reward and the most likely loses beta (G-1)/G of it.
    This counters GRPO's rank bias towards already-likely solutions (distribution sharpening).

    Use when: pass@k for large k matters (theorem proving, search), and GRPO only sharpens what the model
    already solves.
    """
    idx, k = group_index(group_ids)
    n = rewards.shape[0]
    ll = seq_log_likelihood.double()
    # rank within the group, descending likelihood: stable sorts by -ll, then by group (ties: earlier first)
    by_ll = torch.sort(-ll, stable=True).indices
    order = by_ll[torch.sort(idx[by_ll], stable=True).indices]                            # [N] (group, -ll, pos)
    size = torch.zeros(k, dtype=torch.long).scatter_add_(0, idx, torch.ones_like(idx))
    start = torch.cumsum(size, 0) - size
    rank = torch.empty(n, dtype=torch.long)
    rank[order] = torch.arange(n) - start[idx[order]]
    g = size[idx].double()
    weight = 1.0 - beta * (g - 1 - rank.double()) / g
    r = torch.where(rewards.double() > min_reward, rewards.double() * weight, rewards.double())
    return grpo(r.to(rewards.dtype), group_ids, eps, unbiased)


# ------------------------------------------------------------------------------------- XRPO sharpening (S38)

@register("xrpo_sharpen", "novelty-aware sharpening: bonus for positive-advantage samples less likely than "
          "their group", ref="S38 XRPO",
          requires=("log_probs", "mask"))
def xrpo_sharpen(rewards: Tensor, group_ids: Tensor, log_probs: Tensor, mask: Tensor, lam: float = 1.0,
                 kappa: float = 1.0, eps: float = 1e-4, unbiased: bool = False) -> Tensor:
    """XRPO advantage sharpening: for A_i > 0, A_i += min(max(lam (1 - eta_i), 0), kappa A_i).

    s_i = mean per-token log-likelihood, eta_i = exp(s_i - mean_group s): a correct answer the policy finds
    less likely than its group's average (eta < 1) is amplified, by at most kappa times its advantage.
    Negative advantages are unchanged.

    Use when: the policy keeps re-finding the same solutions; rare correct ones should pull harder.
    """
    a = grpo(rewards, group_ids, eps, unbiased)
    s = _seq_mean(log_probs.double(), mask)                                                  # [N]
    s_bar, _, _ = group_mean_std(s, group_ids)
    eta = torch.exp(s - s_bar)
    bonus = torch.minimum((lam * (1 - eta)).clamp(min=0), kappa * a.double().abs())
    return torch.where(a > 0, a.double() + bonus, a.double()).to(rewards.dtype)


# ------------------------------------------------------------------------------------- Supergroup SGRPO (S30)

def set_diversity(sim: Tensor) -> Tensor:
    """Mean pairwise dissimilarity 1 - sim over the pairs of a set ([n, n] -> scalar); 0 for n < 2."""
    n = sim.shape[0]
    if n < 2:
        return sim.new_zeros(())
    off = ~torch.eye(n, dtype=torch.bool, device=sim.device)
    return (1 - sim[off]).mean()


def loo_diversity(sim: Tensor) -> tuple[Tensor, Tensor]:
    """(D(S), c [n]) with c_i = D(S) - D(S without i), vectorized from the pair sums."""
    n = sim.shape[0]
    d = 1 - sim.double()
    d = d - torch.diag(torch.diagonal(d))                                                 # no self pairs
    total = d.sum() / 2                                                                   # sum over pairs
    pairs = n * (n - 1) / 2
    full = total / pairs if n >= 2 else d.new_zeros(())
    rest_pairs = (n - 1) * (n - 2) / 2
    rest = (total - d.sum(1)) / rest_pairs if n >= 3 else torch.zeros(n, dtype=torch.float64)
    return full, full - rest


@register("sgrpo", "supergroup: set-level diversity of each set of a group, shared to members by leave-one-out "
          "contribution, added to the reward", ref="S30 SGRPO",
          requires=("token_ids", "mask"))
def sgrpo(rewards: Tensor, group_ids: Tensor, token_ids: Tensor, mask: Tensor, num_sets: int = 2,
          weight: float = 0.5, similarity: str = "token_match", eps: float = 1e-4, unbiased: bool = False) -> Tensor:
    """SGRPO: each group (one condition) is a supergroup of `num_sets` candidate sets (consecutive members).

    For a set S: D(S) = mean pairwise (1 - sim); member i's contribution c_i = D(S) - D(S minus i); its
    diversity reward d_i = D(S) + c_i - mean_{k in S} c_k (so the set's members share |S| D(S) in total,
    more to those that add diversity). Then r'_i = r_i + weight d_i and GRPO over the whole group, which
    compares the sets' diversity under the same condition. `similarity` names an entry of
    `mmgrpo.methods.similarity.SIMILARITIES` over token ids (register your own for other outputs).

    Use when: utility alone collapses generation onto one family of candidates (molecules, designs, prompts
    for a diverse set) and set-level diversity matters.
    """
    sim_fn = SIMILARITIES.get(similarity)
    idx, k = group_index(group_ids)
    d = torch.zeros(rewards.shape[0], dtype=torch.float64)
    for g in range(k):
        members = (idx == g).nonzero().squeeze(1)                                         # batch order
        if members.numel() % num_sets:
            raise ValueError(f"sgrpo: a group of {members.numel()} samples cannot be cut into num_sets={num_sets} "
                             "equal sets; choose num_sets dividing data.group_size")
        for part in members.chunk(num_sets):
            sim = sim_fn(token_ids[part], mask[part]).double()
            full, c = loo_diversity(sim)
            d[part] = full + c - c.mean()
    r = rewards.double() + weight * d
    return grpo(r.to(rewards.dtype), group_ids, eps, unbiased)


# ------------------------------------------------------------------------------ per-segment GRPO (S2, S21)

@register("segment_grpo", "separate group-relative advantages per segment/phase (own reward column, own peers)",
          ref="S2 F-GRPO; S21 M-GRPO",
          requires=("segment_ids", "raw_rewards", "mask"))
def segment_grpo(rewards: Tensor, group_ids: Tensor, segment_ids: Tensor, mask: Tensor,
                 columns: list | None = None, raw_rewards: Tensor | None = None, eps: float = 1e-4,
                 unbiased: bool = False) -> Tensor:
    """Dense A[i, t] = GRPO of segment s = segment_ids[i, t], computed among the group members that HAVE s.

    `columns[s]` names the reward column (index into the run's rewards) that scores segment s (F-GRPO: a
    coverage reward for the generation phase, a ranking utility for the ranking phase); -1 or a missing
    entry means the combined reward. Per-column rewards need the trainer's `raw_rewards` context. Members
    without segment s (an agent that was not invoked, M-GRPO) do not enter its baseline.

    Use when: one rollout has phases or agents with their own success criteria or their own peers.
    """
    if columns and raw_rewards is None:
        raise ValueError("segment_grpo: `columns` needs the per-reward scores (trainer context 'raw_rewards'), "
                         "which this trainer does not pass; drop `columns` to use the combined reward")
    m = mask.bool()
    out = torch.zeros(mask.shape, dtype=rewards.dtype)
    for s in torch.unique(segment_ids[m]).tolist():
        has = (m & (segment_ids == s))                                                     # [N, T]
        rows = has.any(1)
        col = columns[s] if columns and s < len(columns) else -1
        r = rewards if col == -1 else raw_rewards[:, col].to(rewards.dtype)
        ok = rows & torch.isfinite(r)
        if not ok.any():
            continue
        a = torch.zeros_like(rewards)
        a[ok] = grpo(r[ok], group_ids[ok], eps, unbiased)
        out = torch.where(has & ok.unsqueeze(1), a.unsqueeze(1).expand_as(out), out)
    return out


# ----------------------------------------------------------------------------------------------- TEMPO (S6)

@register("tempo", "GRPO plus branch-gated TD terms V(child) - V(parent) from the group's prefix tree",
          ref="S6 TEMPO",
          requires=("token_ids", "mask"))
def tempo(rewards: Tensor, group_ids: Tensor, token_ids: Tensor, mask: Tensor, td_weight: float = 1.0,
          eps: float = 1e-4, unbiased: bool = False) -> Tensor:
    """TEMPO: A[i, t] = A_grpo_i + td_weight (V(prefix_{<=t}) - V(prefix_{<t})) / (std_group + eps).

    V(prefix) is the mean reward of the group's samples sharing that prefix (Prefix-to-Tree, no critic).
    Where a prefix has one child the TD term is exactly zero and TEMPO is GRPO; at branching tokens it
    credits the choice that led to better outcomes. The TD term uses GRPO's scale (divided by the group
    std) so that both terms are in the same units.

    Use when: samples of a group share prefixes (low temperature, long reasoning) and a few decision tokens
    decide the outcome.
    """
    a = grpo(rewards, group_ids, eps, unbiased)
    _, std, _ = group_mean_std(rewards, group_ids, unbiased)
    td = branch_td(group_ids, token_ids, mask, rewards)                                    # [N, T]
    return _dense(a, mask) + td_weight * td / (std.unsqueeze(1) + eps) * mask


# ------------------------------------------------------------------- segment Monte Carlo values (S14/S29/S46)

@register("segment_mc", "segment advantages from adapter-supplied values at segment boundaries "
          "(V(end) - V(start) per segment), optionally plus GRPO", ref="S14 SPO; S29 TreePO; S46 GRPO-VPS",
          requires=("segment_ids", "segment_values", "mask"))
def segment_mc(rewards: Tensor, group_ids: Tensor, segment_ids: Tensor, segment_values: Tensor, mask: Tensor,
               outcome_weight: float = 0.0, progress_weight: float = 1.0, eps: float = 1e-4,
               unbiased: bool = False) -> Tensor:
    """A[i, t] = outcome_weight A_grpo_i + progress_weight dV_k / (std_batch + eps), k = segment of t.

    dV_k = V(end of k) - V(end of k-1) with V read from `segment_values` (the adapter's Monte Carlo, tree or
    answer-probability estimate of the prefix value) at each segment's last valid position, V before the
    first segment = the group's mean reward (the prompt's value) and V after the last = the sample's reward.
    The dV of a sample telescope to R_i - mean_group, so with outcome_weight = 0 (S14 segment MC) the
    segment advantages of a sample sum to its group-mean-baseline advantage; outcome_weight = 1 adds process
    progress to GRPO (S46). The batch std keeps groups whose rewards are all equal finite.

    Use when: the adapter can value prefixes (cut-point rollouts, a shared tree, probing the answer
    probability) and credit should go to the segments that made progress.
    """
    m = mask.bool()
    end, prev = segment_end_values(segment_values.to(torch.float64), segment_ids, m)
    idx, _ = segment_index(segment_ids, m)
    mean, _, _ = group_mean_std(rewards, group_ids, unbiased)
    # the sample's last segment (the one holding its last valid position) ends at its outcome
    t_idx = torch.arange(m.shape[1]).expand_as(idx)
    last_pos = torch.where(m, t_idx, torch.full_like(t_idx, -1)).max(1).values.clamp(min=0)     # [N]
    last_seg = torch.where(m.any(1), idx.gather(1, last_pos.unsqueeze(1)).squeeze(1), torch.full_like(last_pos, -2))
    is_last = (idx == last_seg.unsqueeze(1)) & m
    end = torch.where(is_last, rewards.double().unsqueeze(1).expand_as(end), end)
    prev = torch.where(torch.isnan(prev) & m, mean.double().unsqueeze(1).expand_as(prev), prev)
    dv = torch.where(m, end - prev, torch.zeros_like(end))                                # [N, T]
    std = rewards.double().std(unbiased=unbiased) if rewards.numel() > 1 else torch.zeros((), dtype=torch.float64)
    a = grpo(rewards, group_ids, eps, unbiased).double() if outcome_weight else torch.zeros_like(rewards.double())
    out = outcome_weight * _dense(a, m) + progress_weight * dv / (std + eps)
    return (out * m).to(rewards.dtype)


# -------------------------------------------------------------------------------------- Perceval (S7)

@register("token_penalty", "GRPO plus a penalty on the tokens a process reward model flagged (token_flags)",
          ref="S7 Perceval",
          requires=("token_flags", "mask"))
def token_penalty(rewards: Tensor, group_ids: Tensor, token_flags: Tensor, mask: Tensor, penalty: float = 1.0,
                  eps: float = 1e-4, unbiased: bool = False) -> Tensor:
    """A[i, t] = A_grpo_i - penalty * flag[i, t]: the sequence advantage everywhere, minus `penalty` on
    flagged spans (Perceval flags hallucinated claims), so an otherwise good answer still unlearns them.

    Use when: a process reward model can point at the wrong spans (perception errors, false claims).
    """
    a = _dense(grpo(rewards, group_ids, eps, unbiased), mask)
    return (a - penalty * (token_flags.bool() & mask.bool()).to(a.dtype)) * mask


# ---------------------------------------------------------------------------------------------- DGPO (S49)

@register("dgpo", "redistribute the sequence advantage over tokens by entropy-gated Hellinger deviation; "
          "use without KL", ref="S49 DGPO",
          requires=("log_probs", "entropy", "mask"))
def dgpo(rewards: Tensor, group_ids: Tensor, log_probs: Tensor, entropy: Tensor, mask: Tensor, mix: float = 0.5,
         eps: float = 1e-4, unbiased: bool = False) -> Tensor:
    """DGPO credit redistribution: A[i, t] = A_i * ((1 - mix) + mix * L_i * s_it / sum_t s_it).

    Deviation of token t: the Hellinger distance between the point mass on the sampled token and the
    policy's next-token distribution, h = sqrt(1 - sqrt(pi(y_t))) in [0, 1] (bounded, unlike the KL; it
    needs only the sampled token's log-prob). Gate: the policy's entropy H_t, so s = h * H: uncertain
    exploratory deviations get the credit, confident low-entropy deviations little. The per-sequence sum of
    advantages, L_i A_i, is preserved. The paper measures deviation against a reference; with only sampled
    log-probs available to estimators, the deviation is taken from the policy's own distribution (a
    documented choice). DGPO drops the KL penalty: use `loss.kl_beta: 0`.

    Use when: long generations where a few uncertain steps decide the outcome, and KL regularization stalls
    exploration.
    """
    m = mask.bool()
    a = grpo(rewards, group_ids, eps, unbiased).double()
    p = log_probs.double().exp().clamp(max=1.0)
    h = (1 - p.sqrt()).clamp(min=0).sqrt()
    s = torch.where(m, h * entropy.double().clamp(min=0), torch.zeros_like(h))            # [N, T]
    length = m.sum(1, keepdim=True).double()
    total = s.sum(1, keepdim=True)
    w = torch.where(total > 0, length * s / total.clamp(min=1e-12), torch.ones_like(s))
    out = a.unsqueeze(1) * ((1 - mix) + mix * w)
    return torch.where(m, out, torch.zeros_like(out)).to(rewards.dtype)


# ------------------------------------------------------------------------------- D^3S token level (S48)

@register("d3s_tokens", "D^3S token level: keep the advantage only on the top fraction of tokens by |A| x entropy",
          ref="S48 D^3S",
          requires=("entropy", "mask"))
def d3s_tokens(rewards: Tensor, group_ids: Tensor, entropy: Tensor, mask: Tensor, token_ratio: float = 0.5,
               eps: float = 1e-4, unbiased: bool = False) -> Tensor:
    """GRPO advantages kept on the ceil(token_ratio * valid tokens) tokens of the batch with the largest
    |A_i| * H_it, zero elsewhere (ties: the earlier position). Schedule `token_ratio` upwards
    (`{schedule: linear, start: 0.3, end: 1.0}`) for D^3S's relaxing curriculum; pair with the `d3s`
    collector for the sample level. Dropped tokens keep their place in the loss normalizer (their
    advantage is zero, only a KL term would still act on them).

    Use when: most tokens are uninformative (long confident spans) and updates should concentrate on
    uncertain, high-signal ones.
    """
    if not 0.0 < token_ratio <= 1.0:
        raise ValueError(f"d3s_tokens: token_ratio must lie in (0, 1], got {token_ratio}")
    m = mask.bool()
    a = grpo(rewards, group_ids, eps, unbiased)
    score = (a.abs().unsqueeze(1) * entropy.to(a.dtype)).masked_fill(~m, -math.inf)        # [N, T]
    n_valid = int(m.sum())
    keep_n = math.ceil(token_ratio * n_valid)
    flat = score.reshape(-1)
    # stable descending order: ties broken by flat position, so the choice is deterministic
    order = torch.sort(flat, descending=True, stable=True).indices[:keep_n]
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[order] = True
    keep = keep.view_as(m) & m
    return torch.where(keep, a.unsqueeze(1).expand_as(score), torch.zeros_like(score))
