"""Likelihood estimators against exhaustive enumeration on a tiny model (alphabet "ab", 4 tokens: 16 sequences).

Facts checked: the AR-order estimator is the exact left-to-right likelihood (a distribution: it sums to 1);
the discrete ELBO is E_order[log p_order(y)] (any-order autoregression), hence below the exact random-order
log-likelihood log E_order[p_order(y)] by Jensen; the Gauss-Legendre (GDPO) estimator's mean over seeds is its
exhaustively computed expectation (it approximates the ELBO; with round(t * L) masked it is no bound); the MC estimators' values depend on the
generator only through its seed.
"""

import itertools
import math

import pytest
import torch

from mmgrpo.modalities.mdlm import masks as M
from mmgrpo.modalities.mdlm.vocab import MASK

from .tiny import all_completions, conditional, rollout_of, tiny_policy

PROMPT = "ab"


@pytest.fixture(scope="module", params=[False, True], ids=["llada", "dream"])
def policy(request):
    torch.manual_seed(0)
    return tiny_policy(shifted_logits=request.param, lora_rank=0)


def estimate(policy, name, rollout, seed=None, **params):
    from mmgrpo.modalities.mdlm import estimators as E

    policy.estimator = E.get(name)
    policy._estimate = policy.estimator.bind(params)
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    with torch.no_grad():
        return policy.log_prob(rollout, slice(0, rollout.num_positions), g).log_probs


@torch.no_grad()
def subset_table(policy, y):
    """{frozenset(masked): [L] log p(y_i | those masked)} for all 2^L subsets, in one batched forward."""
    length = len(y)
    subsets = [frozenset(s) for k in range(length + 1) for s in itertools.combinations(range(length), k)]
    ids, attn = policy.vocab.encode([PROMPT])
    comp = y.expand(len(subsets), -1).clone()
    for row, s in enumerate(subsets):
        comp[row, list(s)] = MASK
    full = torch.cat([ids.expand(len(subsets), -1), comp], 1)
    att = torch.cat([attn.expand(len(subsets), -1), torch.ones_like(comp, dtype=torch.bool)], 1)
    logp = torch.log_softmax(policy._forward(full, att)[:, ids.shape[1]:], -1)          # [2^L, L, V]
    per = logp.gather(-1, y.expand(len(subsets), -1)[..., None]).squeeze(-1).double()   # [2^L, L]
    return dict(zip(subsets, per))


def order_loglik(table, order):
    """log p_order(y): decode positions in `order`, one per step."""
    total, masked = 0.0, set(range(len(order)))
    for i in order:
        total += float(table[frozenset(masked)][i])
        masked.remove(i)
    return total


def masked_sum_mean(table, length, k):
    """E_{|M|=k} sum_{i in M} log p(y_i | M masked), every subset enumerated."""
    subsets = list(itertools.combinations(range(length), k))
    return sum(float(table[frozenset(s)][list(s)].sum()) for s in subsets) / len(subsets)


def discrete_elbo(table, length):
    """sum_k (1/k) E_{|M|=k} sum_{i in M} log p(y_i | M masked)."""
    return sum(masked_sum_mean(table, length, k) / k for k in range(1, length + 1))


def gdpo_expectation(table, length, nodes):
    """sum_j w_j (L / k_j) E_{|M|=k_j} sum_{i in M} log p(y_i | M masked)."""
    t, w = M.gauss_legendre(nodes)
    return sum(wj * length / k * masked_sum_mean(table, length, k)
               for wj, k in zip(w.tolist(), M.node_counts(t, length).tolist()))


def test_ar_order_estimator_is_the_exact_left_to_right_likelihood(policy):
    ys = all_completions(policy)                                   # [16, 4]
    ar = estimate(policy, "ar", rollout_of(policy, PROMPT, ys)).sum(1).double()
    loop = torch.tensor([order_loglik(subset_table(policy, y), range(4)) for y in ys], dtype=torch.double)
    torch.testing.assert_close(ar, loop, atol=1e-5, rtol=0)
    assert float(ar.exp().sum()) == pytest.approx(1.0, abs=1e-5)  # a distribution over the 16 sequences
    # the trace estimator with a left-to-right order is the same thing
    tr = estimate(policy, "trace", rollout_of(policy, PROMPT, ys)).sum(1).double()
    torch.testing.assert_close(tr, ar, atol=1e-5, rtol=0)


def test_elbos_stay_below_the_exact_random_order_log_likelihood(policy):
    orders = list(itertools.permutations(range(4)))
    for y in all_completions(policy):
        table = subset_table(policy, y)
        per_order = torch.tensor([order_loglik(table, o) for o in orders], dtype=torch.double)
        exact = float(torch.logsumexp(per_order, 0) - math.log(len(orders)))      # log E_order p_order(y)
        elbo = discrete_elbo(table, 4)
        assert elbo == pytest.approx(float(per_order.mean()), abs=1e-4)         # any-order AR identity
        assert elbo < exact
    # (GDPO's quadrature with round(t * L) masked is an approximation of the ELBO, not a bound: on this model
    # one sequence reads -10.63 against an exact -10.86; its mean is checked against its own expectation.)


def test_gdpo_mean_over_seeds_matches_its_exhaustive_expectation(policy):
    y = all_completions(policy)[5]
    r = rollout_of(policy, PROMPT, y.expand(200, -1).clone())      # 200 samples = 200 independent mask draws
    r.state["seeds"] = torch.arange(200)
    vals = torch.cat([estimate(policy, "elbo", r, seed=s, nodes=3).sum(1) for s in range(5)]).double()  # [1000]
    expected = gdpo_expectation(subset_table(policy, y), 4, 3)
    se = float(vals.std()) / math.sqrt(len(vals))
    assert se > 0                                                   # the masks really are random
    assert float(vals.mean()) == pytest.approx(expected, abs=4 * se + 1e-6)


def test_monte_carlo_estimators_are_functions_of_the_generator_seed(policy):
    r = rollout_of(policy, PROMPT, all_completions(policy))
    for name in ("d1", "coupled", "elbo"):
        a, b, c = (estimate(policy, name, r, seed=s) for s in (3, 3, 4))
        torch.testing.assert_close(a, b, atol=0, rtol=0)
        assert not torch.allclose(a, c), f"{name}: another generator seed must draw other masks"


def test_d1_without_prompt_masking_is_the_fully_masked_view(policy):
    ys = all_completions(policy)
    d1 = estimate(policy, "d1", rollout_of(policy, PROMPT, ys), seed=1, prompt_mask_p=0.0)
    loop = torch.stack([conditional(policy, PROMPT, y, [0, 1, 2, 3]) for y in ys])
    torch.testing.assert_close(d1, loop, atol=1e-5, rtol=0)


def test_coupled_scores_each_token_once_in_its_complementary_view(policy):
    ys = all_completions(policy)[:6]
    r = rollout_of(policy, PROMPT, ys)
    got = estimate(policy, "coupled", r, seed=9)
    gens = M.sample_generators(r.state["seeds"], 9)
    m, t = M.coupled_masks(gens, 4, 0.2, 0.8)
    assert ((m.sum(1) == torch.round(t * 4)).all() and (t >= 0.2).all() and (t <= 0.8).all())
    for y, row, g in zip(ys, m, got):
        a, b = row.nonzero().flatten().tolist(), (~row).nonzero().flatten().tolist()
        assert sorted(a + b) == [0, 1, 2, 3]                        # every token in exactly one view
        paired = torch.zeros(4)
        paired[a] = conditional(policy, PROMPT, y, a)
        paired[b] = conditional(policy, PROMPT, y, b)
        full = conditional(policy, PROMPT, y, [0, 1, 2, 3])
        torch.testing.assert_close(g, 0.5 * (full + paired), atol=1e-5, rtol=0)
