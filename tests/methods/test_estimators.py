"""Hand-computed cases, loop references and parent identities of the catalog's advantage estimators."""

import math

import pytest
import torch

import mmgrpo.methods  # noqa: F401  (registers the catalog)
from mmgrpo import advantages as A
from mmgrpo.methods import estimators as X
from mmgrpo.methods.tracker import ValueTracker

close = torch.testing.assert_close


def gids(*sizes):
    return torch.arange(len(sizes)).repeat_interleave(torch.tensor(sizes))


# ------------------------------------------------------------------------------------------------ NGRPO

def test_ngrpo_all_wrong_group_gets_negative_nonzero_advantages():
    # values with the virtual sample: [0, 0, 0, 0, 1]: mean 0.2; squared deviations 4 * 0.04 + 0.64 = 0.8,
    # var 0.8 / 5 = 0.16, std 0.4 -> A = (0 - 0.2) / 0.4 = -0.5 for every member
    adv = X.ngrpo(torch.zeros(4), gids(4), max_reward=1.0, eps=0.0)
    close(adv, torch.full((4,), -0.5))


def test_ngrpo_mixed_and_all_right_groups():
    # [1, 0, 0, 0] + virtual 1: mean 0.4, deviations [.6, -.4, -.4, -.4, .6], var 1.2 / 5 = 0.24
    r = torch.tensor([1.0, 0, 0, 0, 1, 1, 1, 1])
    adv = X.ngrpo(r, gids(4, 4), eps=0.0)
    s = math.sqrt(0.24)
    close(adv[:4], torch.tensor([0.6 / s, -0.4 / s, -0.4 / s, -0.4 / s]))
    top = X.ngrpo(r[4:], gids(4), eps=1e-4)
    close(top, torch.zeros(4))                             # all at max_reward: mean 1, nothing to learn


def test_ngrpo_matches_a_loop_reference():
    g = torch.Generator().manual_seed(0)
    r = torch.rand(24, generator=g).round()
    ids = torch.randint(0, 5, (24,), generator=g) * 7 + 3
    out = X.ngrpo(r, ids, max_reward=1.0, eps=1e-4)
    for gid in ids.unique():
        sel = ids == gid
        vals = r[sel].tolist() + [1.0]
        mean = sum(vals) / len(vals)
        std = math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals))
        close(out[sel], torch.tensor([(v - mean) / (std + 1e-4) for v in r[sel].tolist()]))


# -------------------------------------------------------------------------------------------- stratified

def test_stratified_hand_computed():
    # group [1, 0 | 0, 0] with strata [0, 0 | 1, 1]:
    #   stratum 0 [1, 0]: mean .5 std .5 -> [1, -1]; stratum 1 [0, 0]: std 0 -> [0, 0]
    #   global: mean .25, std sqrt(.25 * .75) = .4330 -> [1.7321, -.5774, -.5774, -.5774]
    #   alpha .5: [1.3660, -.7887, -.2887, -.2887]
    r = torch.tensor([1.0, 0, 0, 0])
    adv = X.stratified(r, gids(4), torch.tensor([0, 0, 1, 1]), alpha=0.5, eps=1e-6)
    g = math.sqrt(0.25 * 0.75)
    close(adv, torch.tensor([0.5 * 1 + 0.5 * 0.75 / g, 0.5 * -1 - 0.5 * 0.25 / g,
                             -0.5 * 0.25 / g, -0.5 * 0.25 / g]), atol=1e-4, rtol=0)


def test_stratified_identities():
    g = torch.Generator().manual_seed(1)
    r = torch.rand(16, generator=g)
    ids = gids(8, 8)
    strata = torch.randint(0, 3, (16,), generator=g)
    close(X.stratified(r, ids, strata, alpha=0.0), A.grpo(r, ids))          # alpha 0: the global estimator
    one = torch.zeros(16, dtype=torch.long)
    close(X.stratified(r, ids, one, alpha=1.0), A.grpo(r, ids))             # one stratum: SAN = GRPO


# ---------------------------------------------------------------------------------------------------- SPO

def test_spo_baseline_is_the_tracker_value_before_the_batch_then_batch_normalized():
    est = X.SingleStreamValue(prior=0.5, prior_weight=1.0, center=True, eps=0.0)
    lp, m = torch.zeros(4, 2), torch.ones(4, 2, dtype=torch.bool)
    # step 1: prompt "a" (unseen, baseline 0.5) rewards [1, 1]; prompt "b" (unseen) rewards [0, 0]
    # raw A = [.5, .5, -.5, -.5], mean 0, std .5 -> [1, 1, -1, -1]
    adv = est(torch.tensor([1.0, 1, 0, 0]), gids(2, 2), ["a", "a", "b", "b"], lp, m)
    close(adv, torch.tensor([1.0, 1, -1, -1]))
    # first visit: S = .5 * 1 + 2, W = 1 + 2 -> v(a) = 2.5 / 3
    assert est.tracker.value("a") == pytest.approx(2.5 / 3)
    # step 2, same log-likelihood (D = 0 -> rho = rho_max = .96): S = .96 * 2.5 + 1, W = .96 * 3 + 2
    est(torch.tensor([1.0, 0, 0, 0]), gids(2, 2), ["a", "a", "b", "b"], lp, m)
    assert est.tracker.value("a") == pytest.approx((0.96 * 2.5 + 1) / (0.96 * 3 + 2))


def test_value_tracker_kl_adaptive_discount():
    tr = ValueTracker(rho_min=0.5, rho_max=0.96, d_half=0.06)
    tr.update("x", [1.0], loglik=-1.0)
    assert tr.discount("x", -1.0) == 0.96                           # 2^0 = 1, clamped to rho_max
    assert tr.discount("x", -1.03) == pytest.approx(2 ** -0.5)       # D = .03 = d_half / 2
    assert tr.discount("x", -2.0) == 0.5                             # far moved: clamped to rho_min
    sd = tr.state_dict()
    other = ValueTracker()
    other.load_state_dict(sd)
    assert other.value("x") == tr.value("x")


def test_spo_works_with_single_sample_groups():
    est = X.SingleStreamValue()
    adv = est(torch.tensor([1.0, 0.0, 1.0]), torch.arange(3), ["p", "q", "r"], torch.zeros(3, 1),
              torch.ones(3, 1, dtype=torch.bool))
    assert adv[0] > 0 > adv[1]                                       # GRPO would give all zeros here


# ------------------------------------------------------------------------------------------- unlikeliness

def test_unlikeliness_hand_computed():
    # G = 4, R = [1, 1, 0, 1], ll = [-1, -3, -2, -5] -> ranks by descending ll: [0, 2, 1, 3]
    # weights 1 - .5 (3 - rank) / 4 = [.625, .875, -, 1.0] -> r' = [.625, .875, 0, 1]
    r = torch.tensor([1.0, 1, 0, 1])
    adv = X.unlikeliness(r, gids(4), torch.tensor([-1.0, -3, -2, -5]), beta=0.5)
    close(adv, A.grpo(torch.tensor([0.625, 0.875, 0.0, 1.0]), gids(4)))


def test_unlikeliness_matches_a_loop_reference_and_beta_zero_is_grpo():
    g = torch.Generator().manual_seed(2)
    r = torch.rand(20, generator=g).round()
    ll = -torch.rand(20, generator=g) * 5
    ids = gids(4, 6, 10)
    out = X.unlikeliness(r, ids, ll, beta=0.3)
    ref = r.clone()
    for gid in ids.unique().tolist():
        members = (ids == gid).nonzero().squeeze(1).tolist()
        ranked = sorted(members, key=lambda i: (-ll[i].item(), i))
        for rank, i in enumerate(ranked):
            if r[i] > 0:
                ref[i] = r[i] * (1 - 0.3 * (len(members) - 1 - rank) / len(members))
    close(out, A.grpo(ref, ids))
    close(X.unlikeliness(r, ids, ll, beta=0.0), A.grpo(r, ids))


# ---------------------------------------------------------------------------------------- XRPO sharpening

def test_xrpo_sharpen_hand_computed():
    # R = [1, 1, 0, 0]: A = [1, 1, -1, -1]; mean token log-lik s = [-1, -2, -1, -1], s_bar = -1.25
    # eta = exp(s - s_bar) = [e^.25, e^-.75, ...]; sample 0: 1 - e^.25 < 0 -> no bonus
    # sample 1: bonus min(1 - e^-.75, kappa |A| = 1) = .5276 -> 1.5276; negatives unchanged
    lp = torch.tensor([[-1.0], [-2.0], [-1.0], [-1.0]])
    adv = X.xrpo_sharpen(torch.tensor([1.0, 1, 0, 0]), gids(4), lp, torch.ones(4, 1, dtype=torch.bool), eps=0.0)
    close(adv, torch.tensor([1.0, 1 + (1 - math.exp(-0.75)), -1, -1]))


def test_xrpo_sharpen_bonus_is_capped_by_kappa():
    lp = torch.tensor([[-0.1], [-9.0], [-0.1], [-0.1]])
    adv = X.xrpo_sharpen(torch.tensor([1.0, 1, 0, 0]), gids(4), lp, torch.ones(4, 1, dtype=torch.bool),
                         lam=10.0, kappa=0.5, eps=0.0)
    assert adv[1].item() == pytest.approx(1.5)                      # A + kappa * A


# -------------------------------------------------------------------------------------------------- SGRPO

def test_loo_diversity_hand_computed_and_loop_reference():
    # tokens [a], [a], [b]: dissimilarities (0,1)=0, (0,2)=1, (1,2)=1 -> D = 2/3
    # D without 0 = 1, without 1 = 1, without 2 = 0 -> c = [-1/3, -1/3, 2/3]
    sim = torch.tensor([[1.0, 1, 0], [1, 1, 0], [0, 0, 1]])
    full, c = X.loo_diversity(sim)
    assert full.item() == pytest.approx(2 / 3)
    close(c, torch.tensor([-1 / 3, -1 / 3, 2 / 3], dtype=torch.float64))
    g = torch.Generator().manual_seed(3)
    sim = torch.rand(5, 5, generator=g)
    sim = (sim + sim.T) / 2
    sim.fill_diagonal_(1.0)
    full, c = X.loo_diversity(sim)
    for i in range(5):
        rest = [j for j in range(5) if j != i]
        close(c[i], full - X.set_diversity(sim[rest][:, rest]).double())


def test_sgrpo_rewards_the_diverse_set():
    # set 1: two identical samples (D = 0); set 2: two samples without a common token (D = 1)
    # d = [0, 0, 1, 1]; r' = 0 + .5 d -> GRPO [-1, -1, 1, 1]
    tok = torch.tensor([[0, 0], [0, 0], [0, 1], [2, 3]])
    adv = X.sgrpo(torch.zeros(4), gids(4), tok, torch.ones(4, 2, dtype=torch.bool), num_sets=2, weight=0.5,
                  eps=0.0)
    close(adv, torch.tensor([-1.0, -1, 1, 1]))


def test_sgrpo_rejects_uneven_sets():
    with pytest.raises(ValueError, match="num_sets"):
        X.sgrpo(torch.zeros(3), gids(3), torch.zeros(3, 2, dtype=torch.long), torch.ones(3, 2, dtype=torch.bool),
                num_sets=2)


# ----------------------------------------------------------------------------------------- segment GRPO

def test_segment_grpo_baselines_only_over_members_that_have_the_segment():
    # segment 0 in all four samples: R = [1, 0, 1, 0] -> [1, -1, 1, -1]
    # segment 1 only in samples 0..2 (sample 3 stopped): [1, 0, 1] mean 2/3, std sqrt(2/9)
    r = torch.tensor([1.0, 0, 1, 0])
    seg = torch.tensor([[0, 0, 1, 1]] * 4)
    mask = torch.ones(4, 4, dtype=torch.bool)
    mask[3, 2:] = False
    adv = X.segment_grpo(r, gids(4), seg, mask, eps=0.0)
    s = math.sqrt(2 / 9)
    close(adv[:, 0], torch.tensor([1.0, -1, 1, -1]))
    close(adv[:3, 2], torch.tensor([(1 / 3) / s, (-2 / 3) / s, (1 / 3) / s]))
    assert (adv[3, 2:] == 0).all()


def test_segment_grpo_per_segment_reward_columns():
    raw = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    seg = torch.tensor([[0, 1]] * 4)
    adv = X.segment_grpo(raw.sum(1), gids(4), seg, torch.ones(4, 2, dtype=torch.bool), columns=[0, 1],
                         raw_rewards=raw, eps=0.0)
    close(adv[:, 0], A.grpo(raw[:, 0], gids(4), eps=0.0))
    close(adv[:, 1], A.grpo(raw[:, 1], gids(4), eps=0.0))
    with pytest.raises(ValueError, match="raw_rewards"):
        X.segment_grpo(raw.sum(1), gids(4), seg, torch.ones(4, 2, dtype=torch.bool), columns=[0, 1])


# ---------------------------------------------------------------------------------------------------- TEMPO

def tempo_reference(rewards, group_ids, tokens, mask):
    """Loop reference: V(prefix) by dictionary over (group, token tuple); TD only at valid positions."""
    visits: dict = {}
    for i in range(len(rewards)):
        g = int(group_ids[i])
        for t in range(tokens.shape[1] + 1):
            visits.setdefault((g, tuple(tokens[i, :t].tolist())), []).append(float(rewards[i]))
    v = {k: sum(x) / len(x) for k, x in visits.items()}
    td = torch.zeros(tokens.shape, dtype=torch.float64)
    for i in range(len(rewards)):
        g = int(group_ids[i])
        for t in range(tokens.shape[1]):
            if mask[i, t]:
                td[i, t] = v[(g, tuple(tokens[i, :t + 1].tolist()))] - v[(g, tuple(tokens[i, :t].tolist()))]
    return td


def test_tempo_hand_computed():
    # a=[1,2,3] r=1, b=[1,2,4] r=0, c=[1,5,6] r=1, d=[1,5,7] r=1; V(root) = V(1) = .75
    # t=0: single child of the root -> TD 0 (plain GRPO); t=1: V(1,2) = .5, V(1,5) = 1 -> -.25, -.25, +.25, +.25
    # t=2: a 1 - .5 = .5, b 0 - .5 = -.5, c and d 1 - 1 = 0
    tok = torch.tensor([[1, 2, 3], [1, 2, 4], [1, 5, 6], [1, 5, 7]])
    r = torch.tensor([1.0, 0, 1, 1])
    mask = torch.ones(4, 3, dtype=torch.bool)
    adv = X.tempo(r, gids(4), tok, mask, eps=0.0)
    std = math.sqrt(0.75 * 0.25)
    grpo = (r - 0.75) / std
    td = torch.tensor([[0, -0.25, 0.5], [0, -0.25, -0.5], [0, 0.25, 0], [0, 0.25, 0]])
    close(adv, grpo.unsqueeze(1) + td / std)
    close(adv[:, 0], grpo)                                  # no branching at t = 0: exactly GRPO


def test_tempo_without_branching_equals_grpo_and_matches_loop_reference():
    g = torch.Generator().manual_seed(4)
    r = torch.rand(12, generator=g)
    ids = gids(4, 4, 4)
    same = torch.randint(0, 3, (1, 5), generator=g).expand(12, 5)      # one path per group: no branch below root
    mask = torch.ones(12, 5, dtype=torch.bool)
    close(X.tempo(r, ids, same[:, :], mask, td_weight=1.0)[:, 1:],
          A.grpo(r, ids).unsqueeze(1).expand(12, 4))
    close(X.tempo(r, ids, same, mask, td_weight=0.0), A.grpo(r, ids).unsqueeze(1).expand(12, 5))
    tok = torch.randint(0, 2, (12, 5), generator=g)
    mask = torch.rand(12, 5, generator=g) > 0.2
    from mmgrpo.methods.tree import branch_td
    close(branch_td(ids, tok, mask, r.double()), tempo_reference(r, ids, tok, mask))


# ------------------------------------------------------------------------------------------- segment MC

def test_segment_mc_hand_computed_and_telescoping():
    # group of 2, segments [0,0,1,1]; group mean .5
    # sample 0 (R=1): V = [.2,.4,.6,.8]: seg0 .4 - .5 = -.1, seg1 1 - .4 = .6 (sum .5 = R - mean)
    # sample 1 (R=0): V = [.1,.3,.3,.1]: seg0 .3 - .5 = -.2, seg1 0 - .3 = -.3 (sum -.5)
    # batch std of [1, 0] = .5 -> A = dV / .5
    vals = torch.tensor([[0.2, 0.4, 0.6, 0.8], [0.1, 0.3, 0.3, 0.1]])
    seg = torch.tensor([[0, 0, 1, 1]] * 2)
    mask = torch.ones(2, 4, dtype=torch.bool)
    adv = X.segment_mc(torch.tensor([1.0, 0.0]), gids(2), seg, vals, mask, eps=0.0)
    close(adv, torch.tensor([[-0.2, -0.2, 1.2, 1.2], [-0.4, -0.4, -0.6, -0.6]]))
    both = X.segment_mc(torch.tensor([1.0, 0.0]), gids(2), seg, vals, mask, outcome_weight=1.0, eps=0.0)
    close(both - adv, torch.tensor([[1.0] * 4, [-1.0] * 4]))      # + GRPO ([1, -1] for this group)


def test_segment_mc_segment_advantages_sum_to_the_batch_std_baseline_advantage():
    g = torch.Generator().manual_seed(5)
    r = torch.rand(8, generator=g)
    vals = torch.rand(8, 6, generator=g)
    seg = torch.tensor([0, 0, 1, 1, 1, 2]).expand(8, 6)
    mask = torch.ones(8, 6, dtype=torch.bool)
    mask[2, 4:] = False                                          # a sample that ended inside segment 1
    adv = X.segment_mc(r, gids(4, 4), seg, vals, mask, eps=0.0)
    # one value per segment: take each segment's first position
    firsts = [0, 2, 5]
    per_seg = torch.stack([adv[:, f] for f in firsts], 1)
    per_seg[2, 2] = 0.0                                          # sample 2 has no segment 2
    close(per_seg.sum(1), A.grpo_batch_std(r, gids(4, 4), eps=0.0))


# ------------------------------------------------------------------------------------- Perceval, DGPO, D^3S

def test_token_penalty_hand_computed():
    flags = torch.tensor([[False, True], [False, False]])
    adv = X.token_penalty(torch.tensor([1.0, 0.0]), gids(2), flags, torch.ones(2, 2, dtype=torch.bool),
                          penalty=0.5, eps=0.0)
    close(adv, torch.tensor([[1.0, 0.5], [-1.0, -1.0]]))


def test_dgpo_hand_computed():
    # R = [1, 0] -> A = [1, -1]
    # sample 0: p = [.25, 1]: h = [sqrt(1 - .5), 0]; H = [1, 1] -> s = [.7071, 0] -> w = 2 s / sum s = [2, 0]
    #   mix .5: [.5 + 1, .5 + 0] = [1.5, .5] (sum 2 = L A)
    # sample 1: p = [.25, .25], H = [2, 0] -> s = [1.414, 0] -> same weights -> [-1.5, -.5]
    lp = torch.log(torch.tensor([[0.25, 1.0], [0.25, 0.25]]))
    ent = torch.tensor([[1.0, 1.0], [2.0, 0.0]])
    adv = X.dgpo(torch.tensor([1.0, 0.0]), gids(2), lp, ent, torch.ones(2, 2, dtype=torch.bool), mix=0.5, eps=0.0)
    close(adv, torch.tensor([[1.5, 0.5], [-1.5, -0.5]]))


def test_dgpo_preserves_the_sequence_credit_and_mix_zero_is_grpo():
    g = torch.Generator().manual_seed(6)
    r = torch.rand(8, generator=g)
    lp = -torch.rand(8, 5, generator=g) * 3
    ent = torch.rand(8, 5, generator=g)
    mask = torch.rand(8, 5, generator=g) > 0.3
    mask[:, 0] = True
    adv = X.dgpo(r, gids(4, 4), lp, ent, mask, mix=1.0)
    a = A.grpo(r, gids(4, 4))
    close(adv.sum(1), a * mask.sum(1), atol=1e-5, rtol=1e-5)
    close(X.dgpo(r, gids(4, 4), lp, ent, mask, mix=0.0), a.unsqueeze(1) * mask)


def test_d3s_tokens_keeps_the_top_abs_advantage_times_entropy_tokens():
    # A = [1, -1]; scores |A| H = [[.1, .9], [.5, .2]]; ratio .5 keeps 2 of 4: (0, 1) and (1, 0)
    ent = torch.tensor([[0.1, 0.9], [0.5, 0.2]])
    adv = X.d3s_tokens(torch.tensor([1.0, 0.0]), gids(2), ent, torch.ones(2, 2, dtype=torch.bool),
                       token_ratio=0.5, eps=0.0)
    close(adv, torch.tensor([[0.0, 1.0], [-1.0, 0.0]]))
    full = X.d3s_tokens(torch.tensor([1.0, 0.0]), gids(2), ent, torch.ones(2, 2, dtype=torch.bool),
                        token_ratio=1.0, eps=0.0)
    close(full, torch.tensor([[1.0, 1.0], [-1.0, -1.0]]))   # ratio 1 is GRPO


def test_every_catalog_estimator_is_registered_with_a_seed_reference():
    ours = ["ngrpo", "stratified", "spo", "unlikeliness", "xrpo_sharpen", "sgrpo", "segment_grpo", "tempo",
            "segment_mc", "token_penalty", "dgpo", "d3s_tokens"]
    for name in ours:
        e = A.ADVANTAGES.entry(name)
        assert e.ref.startswith("S") and e.description, name
