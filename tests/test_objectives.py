"""Hand-computed objectives (values and gradients)."""

import math

import pytest
import torch

from mmgrpo import objectives as O


def _inputs(ratio, adv):
    old = torch.zeros(len(ratio), 1)
    logp = torch.log(torch.tensor(ratio, dtype=torch.float32)).unsqueeze(1).requires_grad_(True)
    return logp, old, torch.tensor(adv, dtype=torch.float32), torch.ones(len(ratio), 1, dtype=torch.bool)


def test_clip_hand_computed():
    # r = 1.5, A = +1, eps 0.2: -min(1.5, 1.2) = -1.2 (clipped, no gradient)
    # r = 1.5, A = -1: -min(-1.5, -1.2) = 1.5 (unclipped)
    # r = 0.5, A = -1: -min(-0.5, -0.8) = 0.8 (clipped)
    logp, old, adv, m = _inputs([1.5, 1.5, 0.5], [1.0, -1.0, -1.0])
    loss, stats = O.get("clip")(logp, old, adv, m, eps_low=0.2)
    torch.testing.assert_close(loss.squeeze(1), torch.tensor([-1.2, 1.5, 0.8]))
    assert stats["clip_frac"] == pytest.approx(2 / 3)
    loss.sum().backward()
    # d/dlogp of -r*A = -r*A at the unclipped one (r=1.5, A=-1 -> 1.5); clipped ones get 0
    torch.testing.assert_close(logp.grad.squeeze(1), torch.tensor([0.0, 1.5, 0.0]))


def test_clip_higher_dual_clip_and_delta():
    # eps_high 0.28: r = 1.5, A = 1 -> -1.28
    logp, old, adv, m = _inputs([1.5], [1.0])
    assert O.clip(logp, old, adv, m, eps_low=0.2, eps_high=0.28)[0].item() == pytest.approx(-1.28)
    # dual clip c=3: r = 4, A = -1 -> -min(-4, -1.2) = 4, bounded by -c*A = 3
    logp, old, adv, m = _inputs([4.0], [-1.0])
    assert O.clip(logp, old, adv, m, dual_clip=3.0)[0].item() == pytest.approx(3.0)
    # delta 1.3: r = 1.5, A = -1 -> r_unclipped = 1.3 -> -min(-1.3, -1.2) = 1.3
    logp, old, adv, m = _inputs([1.5], [-1.0])
    assert O.clip(logp, old, adv, m, delta=1.3)[0].item() == pytest.approx(1.3)


def test_gspo_sequence_ratio_and_token_form_gradient():
    # log ratios [log 2, 0] -> sequence ratio exp(log(2)/2) = sqrt 2; A = 1, eps_high = 4e-4 -> clipped at 1.0004
    logp = torch.tensor([[math.log(2.0), 0.0]], requires_grad=True)
    old = torch.zeros(1, 2)
    m = torch.ones(1, 2, dtype=torch.bool)
    loss, stats = O.gspo(logp, old, torch.tensor([1.0]), m)
    torch.testing.assert_close(loss, torch.full((1, 2), -1.0004))
    assert stats["ratio_max"] == pytest.approx(math.sqrt(2), rel=1e-6)
    # unclipped case (A = -1 -> -min(-s, -(1+eps)) = s): sequence form gradient w.r.t. logp_t is s / L per
    # position per loss entry; summing the 2 identical entries / 2 (sequence mean) gives s / 2 per token.
    for token_form in (False, True):
        lp = torch.tensor([[0.1, -0.1]], requires_grad=True)       # s = exp(0) = 1 -> inside the trust region
        loss, _ = O.gspo(lp, torch.zeros(1, 2), torch.tensor([-1.0]), m, eps_low=0.5, eps_high=0.5,
                         token_form=token_form)
        (loss.sum() / 2).backward()
        torch.testing.assert_close(lp.grad, torch.tensor([[0.5, 0.5]]))


def test_sapo_gate_value_and_gradient_at_ratio_one():
    # r = 1: loss = -sigmoid(0) * 4/tau * A = -2/tau * A; A = 1 (tau 1) -> -2; A = -1 (tau 1.05) -> 2/1.05
    logp, old, adv, m = _inputs([1.0, 1.0], [1.0, -1.0])
    loss, _ = O.sapo(logp, old, adv, m)
    torch.testing.assert_close(loss.squeeze(1), torch.tensor([-2.0, 2.0 / 1.05]))
    loss.sum().backward()
    # d/dlogp = -A * sigmoid'(0) * tau * 4/tau * r = -A
    torch.testing.assert_close(logp.grad.squeeze(1), torch.tensor([-1.0, 1.0]))


def test_cispo_weight_is_clipped_and_detached():
    # r = 2 (eps_max 5): loss = -2 * A * logp, grad = -2A; r = 8 -> weight 5 -> grad = -5A
    logp, old, adv, m = _inputs([2.0, 8.0], [1.0, 1.0])
    loss, stats = O.cispo(logp, old, adv, m)
    loss.sum().backward()
    torch.testing.assert_close(logp.grad.squeeze(1), torch.tensor([-2.0, -5.0]))
    assert stats["clip_frac"] == pytest.approx(0.5)


def test_dense_advantages_broadcast():
    logp = torch.zeros(2, 3)
    adv = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, -1.0]])
    loss, _ = O.clip(logp, torch.zeros(2, 3), adv, torch.ones(2, 3, dtype=torch.bool))
    torch.testing.assert_close(loss, -adv)


def test_unknown_objective_lists_valid_names():
    with pytest.raises(KeyError, match="valid names: .*cispo.*clip.*gspo.*sapo"):
        O.get("ppo2")
