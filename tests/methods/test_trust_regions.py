"""Hand-computed cases and parent identities of the catalog's objectives (ratios and trust regions)."""

import math

import pytest
import torch

import mmgrpo.methods  # noqa: F401  (registers the catalog)
from mmgrpo import objectives as O
from mmgrpo.methods import trust_regions as X

close = torch.testing.assert_close


def rand_case(seed=0, n=6, t=5, dense=False):
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(n, t, generator=g) * 3
    logp = (old + 0.3 * torch.randn(n, t, generator=g)).requires_grad_(True)
    adv = torch.randn(n, t, generator=g) if dense else torch.randn(n, generator=g)
    mask = torch.rand(n, t, generator=g) > 0.25
    mask[:, 0] = True
    return logp, old, adv, mask


def grad_of(loss, logp, mask):
    (g,) = torch.autograd.grad((loss * mask).sum(), logp)
    return g


# ------------------------------------------------------------------------------------------ segment ratios

def test_segment_clip_hand_computed():
    # one segment of two tokens with log-ratios [.1, .3]: mean .2, ratio e^.2 = 1.2214 > 1.2
    # A = 1: -min(1.2214, 1.2) = -1.2 at both positions, and the clip removes the gradient
    old = torch.zeros(1, 2)
    logp = torch.tensor([[0.1, 0.3]], requires_grad=True)
    mask = torch.ones(1, 2, dtype=torch.bool)
    loss, st = X.segment_clip(logp, old, torch.tensor([1.0]), mask, torch.tensor([[0, 0]]), eps_low=0.2)
    close(loss, torch.full((1, 2), -1.2), rtol=0, atol=1e-6)
    assert st["clip_frac"] == 1.0
    assert grad_of(loss, logp, mask).abs().sum() == 0


def test_segment_clip_between_token_and_sequence_ratio():
    logp, old, adv, mask = rand_case(1)
    per_token = torch.arange(5).expand(6, 5)
    one_segment = torch.zeros(6, 5, dtype=torch.long)
    a, _ = X.segment_clip(logp, old, adv, mask, per_token, eps_low=0.2)
    b, _ = O.clip(logp, old, adv, mask, eps_low=0.2)
    close(a[mask], b[mask])
    close(grad_of(a, logp, mask), grad_of(b, logp, mask))
    c, _ = X.segment_clip(logp, old, adv, mask, one_segment, eps_low=3e-4, eps_high=4e-4)
    d, _ = O.gspo(logp, old, adv, mask)
    close(c[mask], d[mask])
    close(grad_of(c, logp, mask), grad_of(d, logp, mask))


def test_sspo_entropy_adaptive_bounds_hand_computed():
    # entropies [1, 1, 3, 3], sequence mean 2 -> scales [.5, .5, 1.5, 1.5] -> eps [.1, .1, .3, .3]
    # both segments have log-ratios [.15, .15]: ratio e^.15 = 1.1618
    # segment 0: 1.1618 > 1.1 -> clipped, loss -1.1; segment 1: 1.1618 < 1.3 -> loss -1.1618
    old = torch.zeros(1, 4)
    logp = torch.full((1, 4), 0.15)
    loss, st = X.sspo(logp, old, torch.tensor([1.0]), torch.ones(1, 4, dtype=torch.bool),
                      torch.tensor([[0, 0, 1, 1]]), torch.tensor([[1.0, 1, 3, 3]]), eps_low=0.2)
    close(loss, torch.tensor([[-1.1, -1.1, -math.exp(0.15), -math.exp(0.15)]]))
    assert st["clip_scale_mean"] == pytest.approx(1.0)


def test_sspo_with_flat_entropy_is_segment_clip():
    logp, old, adv, mask = rand_case(2)
    seg = torch.tensor([0, 0, 1, 1, 2]).expand(6, 5)
    a, _ = X.sspo(logp, old, adv, mask, seg, torch.ones(6, 5))
    b, _ = X.segment_clip(logp, old, adv, mask, seg)
    close(a[mask], b[mask])


# ---------------------------------------------------------------------------------------------------- CTPO

def test_ctpo_hand_computed_with_position_adaptive_bounds():
    # log-ratios [.1, .1, .1]: c = [.1, .2, .3]; bounds .15 * sqrt(k) = [.15, .2121, .2598]
    # c clipped = [.1, .2, .2598]; A = 1: loss = -[e^.1, e^.2, e^.2598]
    # gradient (prefix detached): position t gets -e^{c_t} unless clipped -> [-e^.1, -e^.2, 0]
    old = torch.zeros(1, 3)
    logp = torch.full((1, 3), 0.1, requires_grad=True)
    mask = torch.ones(1, 3, dtype=torch.bool)
    loss, st = X.ctpo(logp, old, torch.tensor([1.0]), mask, eps_low=0.15, eps_high=0.15)
    close(loss, -torch.tensor([[math.exp(0.1), math.exp(0.2), math.exp(0.15 * math.sqrt(3))]]))
    close(grad_of(loss, logp, mask), torch.tensor([[-math.exp(0.1), -math.exp(0.2), 0.0]]))
    assert st["clip_frac"] == pytest.approx(1 / 3)


def test_ctpo_first_position_is_the_token_ratio():
    logp, old, adv, mask = rand_case(3)
    loss, _ = X.ctpo(logp, old, adv, mask, eps_low=0.2, eps_high=0.2)
    # in linear space the first position's bounds are [e^-.2, e^.2]: the token clip with those eps
    ref, _ = O.clip(logp, old, adv, mask, eps_low=1 - math.exp(-0.2), eps_high=math.exp(0.2) - 1)
    close(loss[:, 0], ref[:, 0])
    g1 = torch.autograd.grad(loss[:, 0].sum(), logp, retain_graph=True)[0]
    g2 = torch.autograd.grad(ref[:, 0].sum(), logp)[0]
    close(g1, g2)


def test_ctpo_full_gradient_form_flows_into_the_prefix():
    old = torch.zeros(1, 2)
    logp = torch.zeros(1, 2, requires_grad=True)
    loss, _ = X.ctpo(logp, old, torch.tensor([1.0]), torch.ones(1, 2, dtype=torch.bool), detach_prefix=False)
    (g,) = torch.autograd.grad(loss[0, 1], logp)
    close(g, torch.tensor([[-1.0, -1.0]]))          # d e^{l0 + l1} / d l0 = 1 at ratio 1
    loss, _ = X.ctpo(logp, old, torch.tensor([1.0]), torch.ones(1, 2, dtype=torch.bool), detach_prefix=True)
    (g,) = torch.autograd.grad(loss[0, 1], logp)
    close(g, torch.tensor([[0.0, -1.0]]))


# ---------------------------------------------------------------------------------------------------- DHPO

def test_dhpo_token_weight_one_is_clip_and_zero_is_gspo():
    logp, old, adv, mask = rand_case(4)
    a, _ = X.dhpo(logp, old, adv, mask, token_weight=1.0, eps_low=0.2)
    b, _ = O.clip(logp, old, adv, mask, eps_low=0.2)
    close(a[mask], b[mask])
    close(grad_of(a, logp, mask), grad_of(b, logp, mask))
    c, _ = X.dhpo(logp, old, adv, mask, token_weight=0.0, seq_eps_low=3e-4, seq_eps_high=4e-4)
    d, _ = O.gspo(logp, old, adv, mask)
    close(c[mask], d[mask])


def test_dhpo_hand_computed():
    # tokens log-ratios [.4, 0]: r_tok = [1.4918, 1], r_seq = e^.2 = 1.2214
    # clipped: tok [1.2, 1], seq (eps .05) 1.05; w = .5, A = 1
    # mixed = [1.3566, 1.1107], clipped mix = [1.125, 1.025] -> loss = -[1.125, 1.025]
    logp, old = torch.tensor([[0.4, 0.0]]), torch.zeros(1, 2)
    loss, st = X.dhpo(logp, old, torch.tensor([1.0]), torch.ones(1, 2, dtype=torch.bool), token_weight=0.5)
    close(loss, torch.tensor([[-1.125, -1.025]]))
    assert st["clip_frac"] == 1.0


def test_dhpo_entropy_weight():
    # H = [3, 1], mean 2 -> w = [.75, .25]; log-ratios 0 -> every ratio 1 -> loss = -A
    loss, st = X.dhpo_entropy(torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([2.0]),
                              torch.ones(1, 2, dtype=torch.bool), torch.tensor([[3.0, 1.0]]))
    close(loss, torch.tensor([[-2.0, -2.0]]))
    assert st["token_weight_mean"] == pytest.approx(0.5)
    # the weight decides the gradient split: d loss_t / d logp_t = -A (w_t + (1 - w_t) / L)
    logp = torch.zeros(1, 2, requires_grad=True)
    loss, _ = X.dhpo_entropy(logp, torch.zeros(1, 2), torch.tensor([1.0]), torch.ones(1, 2, dtype=torch.bool),
                             torch.tensor([[3.0, 1.0]]))
    g = torch.autograd.grad(loss.sum(), logp)[0]
    # sum over both positions: token part w_t, sequence part (1 - w_s) / 2 summed over s
    close(g, -torch.tensor([[0.75 + (0.25 + 0.75) / 2, 0.25 + (0.25 + 0.75) / 2]]))


# ------------------------------------------------------------------------------------------------- Hölder

def test_holder_p_one_is_the_arithmetic_and_p_zero_the_geometric_mean():
    logp, old, adv, mask = rand_case(5)
    r = torch.exp(logp - old).detach()
    arith = (r * mask).sum(1) / mask.sum(1)
    geo = torch.exp(((logp - old).detach() * mask).sum(1) / mask.sum(1))
    close(torch.exp(X.holder_log_ratio(logp, old, mask, 1.0)).squeeze(1).detach(), arith)
    close(torch.exp(X.holder_log_ratio(logp, old, mask, 1e-9)).squeeze(1).detach(), geo)
    close(torch.exp(X.holder_log_ratio(logp, old, mask, 1e-4)).squeeze(1).detach(), geo, atol=1e-4, rtol=1e-4)
    a, _ = X.holder(logp, old, adv, mask, p=0.0, eps_low=3e-4, eps_high=4e-4)
    b, _ = O.gspo(logp, old, adv, mask)
    close(a[mask], b[mask])
    close(grad_of(a, logp, mask), grad_of(b, logp, mask))


def test_holder_hand_computed_p_two():
    # r = [e^.1, e^-.1]: (mean r^2)^(1/2) = sqrt((e^.2 + e^-.2) / 2) = sqrt(cosh .2) = 1.00998
    s = torch.exp(X.holder_log_ratio(torch.tensor([[0.1, -0.1]]), torch.zeros(1, 2),
                                     torch.ones(1, 2, dtype=torch.bool), 2.0))
    assert s.item() == pytest.approx(math.sqrt(math.cosh(0.2)), rel=1e-6)


def test_holder_p_is_schedulable():
    from mmgrpo import schedules
    spec = {"p": {"schedule": "linear", "start": 2.0, "end": 0.0}}
    assert schedules.resolve(spec, 0, 100)["p"] == 2.0
    assert schedules.resolve(spec, 50, 100)["p"] == 1.0
    assert schedules.resolve(spec, 100, 100)["p"] == 0.0


# ----------------------------------------------------------------------------------------------------- ETR

def test_etr_micro_and_macro_zero_is_clip():
    logp, old, adv, mask = rand_case(6)
    a, _ = X.etr(logp, old, adv, mask, micro=0.0, macro=0.0)
    b, _ = O.clip(logp, old, adv, mask)
    close(a[mask], b[mask])


def test_etr_hand_computed_elastic_bounds():
    # ratio e^{ln 1.25} = 1.25, A = 1: plain clip caps at 1.2 (loss -1.2)
    # micro 1: factor 1 + 1/2 = 1.5 -> eps .3 -> not clipped (loss -1.25)
    logp, old = torch.tensor([[math.log(1.25)]]), torch.zeros(1, 1)
    mask = torch.ones(1, 1, dtype=torch.bool)
    loss, _ = X.etr(logp, old, torch.tensor([1.0]), mask, micro=0.0)
    close(loss, torch.tensor([[-1.2]]))
    loss, _ = X.etr(logp, old, torch.tensor([1.0]), mask, micro=1.0)
    close(loss, torch.tensor([[-1.25]]))
    # macro: ratio 1.5; micro 1 (x1.5) and group std .5 of rewards in [0, 1] (nu = 1, x2): eps = .2 * 3 = .6
    logp = torch.tensor([[math.log(1.5)], [math.log(1.5)]])
    loss, st = X.etr(logp, torch.zeros(2, 1), torch.tensor([1.0, 1.0]), torch.ones(2, 1, dtype=torch.bool),
                     micro=1.0, macro=1.0, group_reward_std=torch.tensor([0.5, 0.0]))
    close(loss, torch.tensor([[-1.5], [-1.3]]))               # second: std 0 -> eps .3 -> clipped at 1.3
    with pytest.raises(ValueError, match="group_reward_std"):
        X.etr(logp, torch.zeros(2, 1), torch.tensor([1.0, 1.0]), torch.ones(2, 1, dtype=torch.bool), macro=1.0)


# -------------------------------------------------------------------------------------- asymmetric clipping

def test_asym_clip_equal_bounds_is_clip_and_sign_picks_the_bound():
    logp, old, adv, mask = rand_case(7)
    a, _ = X.asym_clip(logp, old, adv, mask, eps_pos=0.2, eps_neg=0.2)
    b, _ = O.clip(logp, old, adv, mask, eps_low=0.2)
    close(a[mask], b[mask])
    # ratio .8: A = -1 with eps_neg .1 -> clip(.8, .9, 1.1) = .9 -> -min(-.8, -.9) = .9
    #           A = +1 with eps_pos .3 -> clip(.8, .7, 1.3) = .8 -> -min(.8, .8) = -.8
    logp = torch.full((2, 1), math.log(0.8))
    loss, _ = X.asym_clip(logp, torch.zeros(2, 1), torch.tensor([-1.0, 1.0]), torch.ones(2, 1, dtype=torch.bool),
                          eps_pos=0.3, eps_neg=0.1)
    close(loss, torch.tensor([[0.9], [-0.8]]))


# ------------------------------------------------------------------------------------------------ Reg-GRPO

def test_reg_grpo_hand_computed_and_policy_gradient_at_the_behaviour_policy():
    # l = mean log-ratio = (.1 + .3) / 2 = .2; beta 10, A = 1: (10 * .2 - 1)^2 / 20 = 1 / 20 = .05
    logp = torch.tensor([[0.1, 0.3]], requires_grad=True)
    loss, _ = X.reg_grpo(logp, torch.zeros(1, 2), torch.tensor([1.0]), torch.ones(1, 2, dtype=torch.bool),
                         beta=10.0)
    close(loss, torch.full((1, 2), 0.05))
    # at l = 0: d loss / d logp_t = (beta l - A) / L = -A / L, GRPO's gradient of the sequence mean
    logp = torch.zeros(1, 4, requires_grad=True)
    loss, _ = X.reg_grpo(logp, torch.zeros(1, 4), torch.tensor([2.0]), torch.ones(1, 4, dtype=torch.bool))
    (g,) = torch.autograd.grad(loss[0, 0], logp)
    close(g, torch.full((1, 4), -2.0 / 4))


# ---------------------------------------------------------------------------------------------------- LLDS

def test_llds_hand_computed():
    # sample 0: log-ratios [-.1, .05] sum -.05 < 0 -> gate on; only token 0 fell: reg = .5 * .1 = .05
    # sample 1: log-ratios [-.1, .2] sum .1 >= 0 -> no regularizer
    old = torch.zeros(2, 2)
    logp = torch.tensor([[-0.1, 0.05], [-0.1, 0.2]], requires_grad=True)
    mask = torch.ones(2, 2, dtype=torch.bool)
    adv = torch.tensor([1.0, 1.0])
    loss, st = X.llds(logp, old, adv, mask, lam=0.5)
    base, _ = O.clip(logp, old, adv, mask)
    close(loss - base, torch.tensor([[0.05, 0.0], [0.0, 0.0]]))
    assert st["llds_frac"] == pytest.approx(0.25)
    # positive_only: a falling negative sample is left alone
    loss, _ = X.llds(logp, old, torch.tensor([-1.0, 1.0]), mask, lam=0.5, positive_only=True)
    base, _ = O.clip(logp, old, torch.tensor([-1.0, 1.0]), mask)
    close(loss - base, torch.zeros(2, 2))


def test_llds_lam_zero_is_clip():
    logp, old, adv, mask = rand_case(8)
    a, _ = X.llds(logp, old, adv, mask, lam=0.0)
    b, _ = O.clip(logp, old, adv, mask)
    close(a[mask], b[mask])


# -------------------------------------------------------------------------------------------------- common

@pytest.mark.parametrize("name", ["segment_clip", "sspo", "ctpo", "dhpo", "dhpo_entropy", "holder", "etr",
                                  "asym_clip", "reg_grpo", "llds"])
def test_every_catalog_objective_accepts_dense_advantages_and_is_ratio_one_neutral(name):
    """At ratio 1 every objective's gradient points along +A grad logp (a sign error fails here)."""
    entry = O.OBJECTIVES.entry(name)
    fn = entry.obj
    n, t = 4, 6
    logp = torch.zeros(n, t, requires_grad=True)
    mask = torch.ones(n, t, dtype=torch.bool)
    ctx = {"segment_ids": torch.tensor([0, 0, 1, 1, 2, 2]).expand(n, t), "entropy": torch.ones(n, t)}
    ctx = {k: v for k, v in ctx.items() if k in entry.requires}      # exactly the declared inputs
    adv = torch.tensor([1.0, -1.0, 2.0, -0.5])
    loss, stats = fn(logp, torch.zeros(n, t), adv, mask, **ctx)
    assert loss.shape == (n, t) and "ratio_mean" in stats
    (g,) = torch.autograd.grad(loss.sum(), logp)
    assert (torch.sign(-g.sum(1)) == torch.sign(adv)).all(), g
    dense = adv.unsqueeze(1).expand(n, t).clone()
    loss_d, _ = fn(logp, torch.zeros(n, t), dense, mask, **ctx)
    close(loss_d, loss)
    assert getattr(fn, "needs_full_sequence", False) == (name not in ("etr", "asym_clip"))
