"""SPG's sandwiched bounds on the enumerable model (alphabet "ab", 4 tokens, 24 decoding orders).

Exhaustively: ELBO = E_order[log p_order(y)] <= log p(y) = log E_order[p_order(y)] <= U_beta =
(1/beta) log E_order[p_order(y)^beta] (beta >= 1), equality at beta = 1. The estimator's values are checked
against a hand computation from the same K orders (rebuilt from the sample's generator): positive-advantage
samples get mean_k s_k, negative ones (1/beta) log mean_k exp(beta s_k) (mixed with the lower by `mix`).
"""

import itertools
import math

import pytest
import torch

from mmgrpo.modalities.mdlm import estimators as E
from mmgrpo.modalities.mdlm import masks as M

from .test_estimators_exact import PROMPT, order_loglik, subset_table
from .tiny import all_completions, rollout_of, tiny_policy


@pytest.fixture(scope="module")
def policy():
    torch.manual_seed(0)
    return tiny_policy(lora_rank=0)


def spg(policy, rollout, sign, salt, **params):
    policy.estimator = E.get("spg")
    policy._estimate = policy.estimator.bind(params)
    rollout.state["advantage_sign"] = sign
    with torch.no_grad():
        return policy.log_prob(rollout, slice(0, 4), torch.Generator().manual_seed(salt)).log_probs


def test_exhaustive_sandwich_elbo_exact_upper(policy):
    orders = list(itertools.permutations(range(4)))
    for y in all_completions(policy):
        table = subset_table(policy, y)
        s = torch.tensor([order_loglik(table, o) for o in orders], dtype=torch.double)
        exact = float(torch.logsumexp(s, 0) - math.log(24))
        u = {b: float((torch.logsumexp(b * s, 0) - math.log(24)) / b) for b in (1.0, 1.5, 3.0)}
        assert float(s.mean()) < exact < u[1.5] < u[3.0]
        assert u[1.0] == pytest.approx(exact, abs=1e-12)


def test_values_by_hand_from_the_same_orders(policy):
    ys = all_completions(policy)[[0, 5, 9, 14]]
    r = rollout_of(policy, PROMPT, ys)
    sign = torch.tensor([1.0, -1.0, 0.0, -1.0])
    beta, k = 2.0, 3
    got = spg(policy, r, sign, salt=11, orders=k, beta=beta).sum(1).double()
    mixed = spg(policy, r, sign, salt=11, orders=k, beta=beta, mix=0.25).sum(1).double()
    gens = M.sample_generators(r.state["seeds"], 11)
    for row, (y, g) in enumerate(zip(ys, gens)):
        table = subset_table(policy, y)
        steps = [torch.randperm(4, generator=g) for _ in range(k)]        # position decoded at each step
        s = torch.tensor([order_loglik(table, p.tolist()) for p in steps], dtype=torch.double)
        lower = float(s.mean())
        upper = float((torch.logsumexp(beta * s, 0) - math.log(k)) / beta)
        assert upper >= lower
        want = upper if sign[row] < 0 else lower
        assert float(got[row]) == pytest.approx(want, abs=1e-4)
        want_mix = 0.25 * upper + 0.75 * lower if sign[row] < 0 else lower
        assert float(mixed[row]) == pytest.approx(want_mix, abs=1e-4)


def test_upper_token_values_carry_the_tilted_gradient(policy):
    """d/dtheta of the upper bound = sum_k softmax(beta s)_k d s_k: the token values' gradient equals the one of
    (1/beta) logsumexp(beta s) computed directly."""
    y = all_completions(policy)[[6]]
    r = rollout_of(policy, PROMPT, y)
    policy.estimator = E.get("spg")
    policy._estimate = policy.estimator.bind({"orders": 3, "beta": 2.0})
    r.state["advantage_sign"] = torch.tensor([-1.0])
    params = [p for p in policy.model.parameters() if p.requires_grad]
    ctx = policy.context(r, torch.Generator().manual_seed(4))
    val = E.sandwiched(ctx, orders=3, beta=2.0, mix=1.0).sum()
    g1 = torch.autograd.grad(val, params)
    ctx = policy.context(r, torch.Generator().manual_seed(4))
    s = E.order_log_probs(ctx, E.random_orders(ctx.gens, 4, 3)).sum(2)[0]
    direct = (torch.logsumexp(2.0 * s, 0) - math.log(3)) / 2.0
    g2 = torch.autograd.grad(direct, params)
    assert float(val.detach()) == pytest.approx(float(direct.detach()), abs=1e-5)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_missing_sign_and_bad_params_fail_clearly(policy):
    r = rollout_of(policy, PROMPT, all_completions(policy)[:2])
    policy.estimator = E.get("spg")
    policy._estimate = policy.estimator.bind({})
    with pytest.raises(ValueError, match="advantage sign"):
        policy.log_prob(r, slice(0, 4), torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="beta >= 1"):
        spg(policy, r, torch.ones(2), salt=0, beta=0.5)
    signed = policy.with_advantages(r, torch.tensor([0.5, -0.25]))
    assert signed.state["advantage_sign"].tolist() == [1.0, -1.0]


def test_spg_through_the_trainer_signs_recorded_before_the_update(tmp_path):
    """The trainer calls `with_advantages` after the advantages: the signs reach every (shuffled) micro-batch
    and the recomputed old log-probs, so the first ratio is exactly 1; a rollout without them is refused."""
    from pathlib import Path

    from mmgrpo.config import load_config
    from mmgrpo.trainer import Trainer

    recipe = Path(__file__).resolve().parents[2] / "configs" / "mdlm" / "arith_tiny.yaml"
    over = [f"run_dir={tmp_path / 'run'}", "progress=false", "tensorboard=false", "steps=1", "checkpoint_every=0",
            "inner_epochs=1", "policy.estimator=spg", "policy.estimator_params={}", "shuffle_minibatches=true"]
    t = Trainer(load_config(recipe, over))
    batch = t.collect(0)
    sign = batch.rollout.state["advantage_sign"]
    a = batch.advantages if batch.advantages.dim() == 1 else batch.advantages.sum(1)
    assert torch.equal(sign, torch.sign(a).cpu())
    assert (sign < 0).any() and (sign > 0).any()
    stats = t.update(batch, 0)
    assert stats["ratio_min"] == pytest.approx(1.0, abs=1e-6) and stats["ratio_max"] == pytest.approx(1.0, abs=1e-6)
    del batch.rollout.state["advantage_sign"]
    with pytest.raises(Exception, match="advantage sign"):
        t.update(batch, 0)
