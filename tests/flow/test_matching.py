"""Forward-process objectives (AWM, DiffusionNFT): their losses, pieces and the EMA old policy, by hand."""

import pytest
import torch

from mmgrpo import objectives as O
from mmgrpo.modalities.flow import matching as M


def test_awm_loss_by_hand():
    # x0 = 0, eps = 1 -> target velocity eps - x0 = 1; v = [3, 1] per element -> squared errors 4 and 0
    x0, eps = torch.zeros(2, 1, 1, 2), torch.ones(2, 1, 1, 2)
    v = torch.tensor([[[[3.0, 1.0]]], [[[1.0, 1.0]]]])
    t = torch.tensor([0.5, 0.9])
    adv = torch.tensor([2.0, -1.0])
    # sample 0: mean(4, 0) = 2, times A = 2 -> 4; sample 1: error 0 -> 0
    assert M.awm_regression(v, x0, eps, t, adv).tolist() == [4.0, 0.0]
    # w(t) = t: 4 * 0.5 = 2
    assert M.awm_regression(v, x0, eps, t, adv, weighting="t").tolist() == pytest.approx([2.0, 0.0])


def test_nft_r_clips_at_zero_and_one():
    # A_max = 2: r = A / 4 + 1/2 -> A = -2: 0, 0: 1/2, 1: 3/4, 2: 1; beyond A_max clamps
    r = M.nft_r(torch.tensor([-5.0, -2.0, 0.0, 1.0, 2.0, 9.0]), 2.0)
    assert r.tolist() == [0.0, 0.0, 0.5, 0.75, 1.0, 1.0]


def test_nft_loss_by_hand():
    # one element: x0 = 0, eps = 2, t = 0.5 -> x_t = 1.  v_old = 1, v = 3, b = 0.5
    # v+ = 0.5*3 + 0.5*1 = 2 -> x0(v+) = 1 - 0.5*2 = 0 (err 0);  v- = 1.5*1 - 0.5*3 = 0 -> x0(v-) = 1 (err 1)
    x0, eps, t = torch.zeros(1, 1), torch.full((1, 1), 2.0), torch.tensor([0.5])
    v_old, v = torch.ones(1, 1), torch.full((1, 1), 3.0)
    # A = 1, A_max = 2: r = 3/4. Without adaptive weights: (3/4 * 0 + 1/4 * 1) / 0.5 = 0.5
    kw = dict(beta=0.5, adv_clip_max=2.0)
    assert M.nft_regression(v, v_old, x0, eps, t, torch.tensor([1.0]), adaptive_weight=False, **kw).item() == pytest.approx(0.5)
    # adaptive: w+ = max(|0|, 1e-5) = 1e-5 (pos term 0 anyway), w- = 1 -> same 0.5
    assert M.nft_regression(v, v_old, x0, eps, t, torch.tensor([1.0]), **kw).item() == pytest.approx(0.5)
    # A = -2 (r = 0): only the negative half, 1 / 0.5 = 2;  A = 2 (r = 1): only the positive half, 0
    assert M.nft_regression(v, v_old, x0, eps, t, torch.tensor([-2.0]), adaptive_weight=False, **kw).item() == pytest.approx(2.0)
    assert M.nft_regression(v, v_old, x0, eps, t, torch.tensor([2.0]), adaptive_weight=False, **kw).item() == 0.0
    # b = 1: v+ = v = 3 -> x0(v+) = -0.5 (err 0.25); v- = 2 v_old - v = -1 -> x0(v-) = 1.5 (err 2.25)
    # r = 3/4: (0.75 * 0.25 + 0.25 * 2.25) / 1 = 0.75
    assert M.nft_regression(v, v_old, x0, eps, t, torch.tensor([1.0]), beta=1.0, adv_clip_max=2.0,
                      adaptive_weight=False).item() == pytest.approx(0.75)


def test_nft_positive_advantage_pulls_v_towards_the_target_and_negative_away():
    # target velocity eps - x0 = 2; v = v_old = 1: r = 1 descends towards 2, r = 0 away from it
    x0, eps, t = torch.zeros(1, 3), torch.full((1, 3), 2.0), torch.tensor([0.5])
    for a, sign in ((2.0, -1), (-2.0, 1)):
        v = torch.ones(1, 3, requires_grad=True)
        M.nft_regression(v, torch.ones(1, 3), x0, eps, t, torch.tensor([a]), beta=1.0, adv_clip_max=2.0).sum().backward()
        assert (torch.sign(v.grad) == sign).all()      # gradient descent moves v by -grad


@pytest.mark.parametrize("name", ["awm", "nft"])
def test_zero_advantages_give_exactly_zero_gradient(name):
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 2, 3, 3, generator=g), torch.randn(4, 2, 3, 3, generator=g)
    v_old = torch.randn(4, 2, 3, 3, generator=g)
    v = v_old.clone().requires_grad_(True)          # the first update of a step: current == old policy
    t = M.sample_times(8, g).reshape(4, 2)
    fp = {"v": v, "v_old": v_old, "x0": x0[:, 0], "eps": eps, "t": t}   # 4 samples x 2 draws
    loss, _ = O.get(name)(fp, torch.zeros(4), torch.ones(4, dtype=torch.bool))
    assert loss.shape == (4,)
    loss.sum().backward()
    assert torch.count_nonzero(v.grad) == 0


def test_sample_times_are_biased_to_high_noise():
    t = M.sample_times(20000, torch.Generator().manual_seed(0), high_noise_bias=1.0, t_min=0.0, t_max=1.0)
    # density 2t: mean 2/3, P(t < 1/2) = 1/4
    assert t.mean().item() == pytest.approx(2 / 3, abs=0.01)
    assert (t < 0.5).float().mean().item() == pytest.approx(0.25, abs=0.01)
    u = M.sample_times(20000, torch.Generator().manual_seed(0), high_noise_bias=0.0, t_min=0.0, t_max=1.0)
    assert u.mean().item() == pytest.approx(0.5, abs=0.01)


def test_noised_is_the_rectified_flow_interpolation():
    x0, eps = torch.zeros(2, 1), torch.ones(2, 1)
    assert M.noised(x0, eps, torch.tensor([0.25, 1.0])).flatten().tolist() == [0.25, 1.0]


def test_ema_old_policy_update_and_rising_decay():
    # decay 0.25: old = 0.25 * 4 + 0.75 * 0 = 1
    old, new = [torch.full((2,), 4.0)], [torch.zeros(2)]
    M.ema_update(old, new, 0.25)
    assert old[0].tolist() == [1.0, 1.0]
    M.ema_update(old, new, 0.0)                      # decay 0: the old policy is the current one
    assert old[0].tolist() == [0.0, 0.0]
    assert [M.ema_decay(s, rate=0.1, cap=0.5) for s in (0, 1, 3, 10)] == pytest.approx([0.0, 0.1, 0.3, 0.5])
    with pytest.raises(ValueError, match="shapes"):
        M.ema_update([torch.zeros(2)], [torch.zeros(3)], 0.5)


def test_velocity_kl_and_registered_objectives():
    assert M.velocity_kl(torch.tensor([[1.0, 3.0]]), torch.tensor([[0.0, 0.0]])).tolist() == [5.0]
    for name, inputs in (("awm", ("v",)), ("nft", ("v", "v_old"))):
        fn = O.get(name)
        assert fn.consumes == "forward_process" and fn.forward_inputs == inputs
    with pytest.raises(KeyError, match="v_old"):
        O.get("nft")({"v": torch.zeros(1, 1, 2), "x0": torch.zeros(1, 2), "eps": torch.zeros(1, 1, 2),
                      "t": torch.full((1, 1), 0.5)}, torch.zeros(1), torch.ones(1, dtype=torch.bool))


def test_objectives_average_the_draws_of_a_sample_by_hand():
    # one sample, two draws, x0 = 0, eps = 1 (target 1): v = 3 (err 4) and v = 1 (err 0) -> AWM A * mean = 2 * 2
    fp = {"v": torch.tensor([[[3.0], [1.0]]]), "x0": torch.zeros(1, 1), "eps": torch.ones(1, 2, 1),
          "t": torch.tensor([[0.5, 0.9]])}
    loss, stats = O.get("awm")(fp, torch.tensor([2.0]), torch.ones(1, dtype=torch.bool))
    assert loss.tolist() == [4.0] and stats["fp_loss"] == 4.0
    # 't' weighting: (0.5 * 4 + 0.9 * 0) / 2 * A = 2
    assert O.get("awm")(fp, torch.tensor([2.0]), torch.ones(1, dtype=torch.bool), weighting="t")[0].tolist() == [2.0]


# ------------------------------------------------------------------ FlowPolicy.forward_process


def _policy(**fp):
    from mmgrpo.modalities.flow.policy import FlowPolicy, ForwardProcessConfig
    from mmgrpo.modalities.flow.tiny import tiny_sd3_pipeline
    from tests.flow.test_contract import TINY

    return FlowPolicy.from_pipeline(tiny_sd3_pipeline(seed=0), FlowPolicy.Config(
        **{**TINY, "guidance_scale": 1.0, "cfg_in_training": False, "sde": "ode"},
        forward_process=ForwardProcessConfig(**fp)))


@pytest.mark.parametrize("name", ["awm", "nft"])
def test_policy_forward_process_zero_advantage_zero_gradient_and_a_real_gradient_otherwise(name):
    from tests.flow.test_contract import make_batch, perturb_lora

    pol = _policy(times_per_sample=2)
    perturb_lora(pol, scale=0.1)
    with torch.no_grad():
        rollout = pol.sample(make_batch())
    params, fn, valid = pol.trainable_parameters(), O.get(name), torch.ones(6, dtype=torch.bool)
    fp = pol.forward_process(rollout, torch.Generator().manual_seed(0), needs=fn.forward_inputs, step=0)
    assert fp["v"].shape == (6, 2, *rollout.state.final_latents.shape[1:]) and fp["t"].shape == (6, 2)
    loss, _ = fn(fp, torch.zeros(6), valid)
    assert loss.shape == (6,)
    grads = torch.autograd.grad(loss.sum(), params, allow_unused=True)
    assert all(g is None or torch.count_nonzero(g) == 0 for g in grads)
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5, 2.0, -2.0])
    fp = pol.forward_process(rollout, torch.Generator().manual_seed(0), needs=fn.forward_inputs, step=0)
    grads = torch.autograd.grad(fn(fp, adv, valid)[0].sum(), params, allow_unused=True)
    assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0


def test_forward_process_reference_velocity_and_kl():
    from tests.flow.test_contract import make_batch, perturb_lora

    pol = _policy(times_per_sample=1)
    with torch.no_grad():
        rollout = pol.sample(make_batch())
    fp = pol.forward_process(rollout, torch.Generator().manual_seed(0), needs=("v", "v_ref"))
    assert torch.equal(fp["v"].detach(), fp["v_ref"]) and fp["kl_ref"].abs().max() == 0   # fresh LoRA = the base
    perturb_lora(pol, scale=0.1)
    fp = pol.forward_process(rollout, torch.Generator().manual_seed(0), needs=("v", "v_ref"))
    assert torch.allclose(fp["kl_ref"], ((fp["v"] - fp["v_ref"]) ** 2).flatten(1).mean(1))
    with pytest.raises(ValueError, match="v_plus"):
        pol.forward_process(rollout, None, needs=("v_plus",))


def test_old_policy_is_an_ema_and_leaves_the_current_weights_alone():
    pol = _policy()
    before = [p.detach().clone() for p in pol.trainable_parameters()]
    pol._old_params()                                   # old = current (decay 0 at the start)
    with torch.no_grad():
        for p in pol.trainable_parameters():
            p.add_(1.0)
    pol.update_old_policy(0.75)                         # old = 0.75 * before + 0.25 * (before + 1) = before + 0.25
    for o, b in zip(pol._old_params(), before):
        assert torch.allclose(o, b + 0.25)
    with pol.old_policy():
        assert all(torch.allclose(p, b + 0.25) for p, b in zip(pol.trainable_parameters(), before))
    assert all(torch.allclose(p, b + 1.0) for p, b in zip(pol.trainable_parameters(), before))


def test_forward_process_moves_the_old_policy_once_per_step():
    from tests.flow.test_contract import make_batch

    pol = _policy(times_per_sample=1, ema_rate=0.25, ema_cap=0.5)
    with torch.no_grad():
        rollout = pol.sample(make_batch())
    before = [p.detach().clone() for p in pol.trainable_parameters()]
    pol.forward_process(rollout, None, needs=("v", "v_old"), step=0)     # old = current
    with torch.no_grad():
        for p in pol.trainable_parameters():
            p.add_(1.0)                                  # "an optimizer step"
    pol.forward_process(rollout, None, needs=("v", "v_old"), step=1)     # decay 0.25: old = before + 0.75
    pol.forward_process(rollout, None, needs=("v", "v_old"), step=1)     # the same step: unchanged
    for o, b in zip(pol._old_params(), before):
        assert torch.allclose(o, b + 0.75)


def test_shared_noise_gives_a_group_the_same_eps_and_t():
    from tests.flow.test_contract import make_batch

    pol = _policy(times_per_sample=1, shared_noise=True)
    with torch.no_grad():
        rollout = pol.sample(make_batch())
    fp = pol.forward_process(rollout, torch.Generator().manual_seed(1), step=3)
    gs = rollout.state.group_seeds
    for i in range(6):
        for j in range(6):
            same = bool(gs[i] == gs[j])
            assert torch.equal(fp["eps"][i], fp["eps"][j]) == same and bool(fp["t"][i] == fp["t"][j]) == same
    # a micro-batch of one group member draws the same (eps, t) as the whole batch
    one = pol.forward_process(rollout.select(torch.tensor([4])), torch.Generator().manual_seed(9), step=3)
    assert torch.equal(one["eps"][0], fp["eps"][4])
