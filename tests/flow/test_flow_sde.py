"""Hand-computed and reference checks of the stochastic flow steps (mmgrpo.modalities.flow.sde)."""

import math

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from mmgrpo.modalities.flow import sde

KINDS = ["flow_grpo", "cps", "dance", "ode"]
EPS = torch.tensor([1.0, -1.0, 2.0, 0.0]).reshape(1, 1, 2, 2)   # noise giving mean(eps^2) = 6/4 = 1.5
LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)                       # 0.9189385


def _const(value, shape=(1, 1, 2, 2)):
    return torch.full(shape, value)


def test_get_unknown_kind_lists_valid_ones():
    with pytest.raises(KeyError, match="unknown flow SDE step 'ddim'.*cps, dance, flow_grpo, ode"):
        sde.get("ddim")


def test_flow_grpo_hand_computed():
    # x = 1, v = 0.5, s = 0.5, s2 = 0.25, a = 0.5:  dt = -0.25
    # std_t = 0.5 * sqrt(0.5 / 0.5) = 0.5
    # mean  = 1 * (1 + 0.25 * -0.25 / 1) + 0.5 * (1 + 0.25 * 0.5 / 1) * -0.25 = 0.9375 - 0.140625 = 0.796875
    # transition std = 0.5 * sqrt(0.25) = 0.25; prev = mean + 0.25 * eps
    # log_prob = mean(-eps^2 / 2) - log 0.25 - log sqrt(2 pi) = -0.75 + 1.3862944 - 0.9189385 = -0.2826441
    x, v = _const(1.0), _const(0.5)
    prev = 0.796875 + 0.25 * EPS
    out, logp, mean, std = sde.get("flow_grpo")(x, v, 0.5, 0.25, 0.5, prev=prev)
    assert torch.allclose(mean, _const(0.796875))
    assert std.shape == (1, 1, 1, 1) and float(std) == pytest.approx(0.5)
    assert torch.equal(out, prev)
    assert float(logp) == pytest.approx(-0.75 + math.log(4) - LOG_SQRT_2PI, abs=1e-6)
    assert float(logp) == pytest.approx(-0.2826441, abs=1e-6)


def test_flow_grpo_sigma_one_uses_next_sigma_in_denominator():
    # s = 1 would divide by 1 - s = 0; the reference uses sigmas[1] (= sigma_next of step 0) there:
    # std_t = 0.7 * sqrt(1 / (1 - 0.75)) = 0.7 * 2 = 1.4
    _, logp, mean, std = sde.get("flow_grpo")(_const(0.3), _const(-0.2), 1.0, 0.75, 0.7, generator=torch.Generator())
    assert float(std) == pytest.approx(1.4)
    assert torch.isfinite(mean).all() and torch.isfinite(logp).all()


def test_cps_hand_computed():
    # x = 1, v = 0.5, s = 0.5, s2 = 0.25, a = 0.5:
    # std = 0.25 * sin(pi / 4) = 0.1767767;  x0 = 1 - 0.25 = 0.75;  x1 = 1 + 0.25 = 1.25
    # mean = 0.75 * 0.75 + sqrt(0.0625 - 0.03125) * 1.25 = 0.5625 + 0.2209709 = 0.7834709
    # log_prob = -mean((std * eps)^2) = -0.03125 * 1.5 = -0.046875
    std_expected = 0.25 * math.sin(math.pi / 4)
    prev = 0.7834709 + std_expected * EPS
    _, logp, mean, std = sde.get("cps")(_const(1.0), _const(0.5), 0.5, 0.25, 0.5, prev=prev)
    assert torch.allclose(mean, _const(0.7834709), atol=1e-6)
    assert float(std) == pytest.approx(std_expected)
    assert float(logp) == pytest.approx(-0.046875, abs=1e-6)


def test_dance_hand_computed():
    # x = 1, v = 0.5, s = 0.5, s2 = 0.25, eta = 0.3:  dt = -0.25
    # x0 = 0.75; score = -(1 - 0.5 * 0.75) / 0.25 = -2.5
    # mean = 1 + (-0.25)(0.5) - 0.5 * 0.09 * (-2.5) * (-0.25) = 1 - 0.125 - 0.028125 = 0.846875
    # std = 0.3 * sqrt(0.25) = 0.15;  log_prob = -0.75 - log 0.15 - 0.9189385 = 0.2281815
    prev = 0.846875 + 0.15 * EPS
    _, logp, mean, std = sde.get("dance")(_const(1.0), _const(0.5), 0.5, 0.25, 0.3, prev=prev)
    assert torch.allclose(mean, _const(0.846875))
    assert float(std) == pytest.approx(0.15)
    assert float(logp) == pytest.approx(0.2281815, abs=1e-6)


def test_dance_and_flow_grpo_share_the_drift():
    # Both drifts are x + v dt + c^2 / (2 s) (x + (1 - s) v) dt, with c = eta (Dance) or std_t (Flow-GRPO).
    # At s = 0.5, std_t = a: the means must agree for eta = a.
    x, v = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    m1 = sde.get("flow_grpo")(x, v, 0.5, 0.3, 0.6, generator=torch.Generator())[2]
    m2 = sde.get("dance")(x, v, 0.5, 0.3, 0.6, generator=torch.Generator())[2]
    assert torch.allclose(m1, m2, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", [(2, 4, 8, 8), (2, 4, 3, 8, 8)])   # image and video latents
def test_zero_noise_equals_scheduler_euler_step(kind, shape):
    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    sched.set_timesteps(5)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g)
    for i, t in enumerate(sched.timesteps):
        v = torch.randn(shape, generator=g)
        ref = sched.step(v, t, x, return_dict=False)[0]
        prev, _, mean, _ = sde.get(kind)(x, v, sched.sigmas[i], sched.sigmas[i + 1], 0.0, generator=g)
        assert torch.allclose(mean, ref, atol=1e-6), f"{kind} step {i}"
        assert torch.allclose(prev, ref, atol=1e-6), f"{kind} step {i}"
        x = ref


@pytest.mark.parametrize("kind", ["flow_grpo", "cps", "dance"])
@pytest.mark.parametrize("shape", [(3, 4, 6, 6), (3, 4, 2, 6, 6)])
def test_replay_reproduces_log_prob(kind, shape):
    x, v = torch.randn(shape), torch.randn(shape)
    prev, logp, mean, _ = sde.get(kind)(x, v, 0.6, 0.4, 0.7, generator=torch.Generator().manual_seed(1))
    assert logp.shape == (shape[0],)
    _, logp2, mean2, _ = sde.get(kind)(x, v, 0.6, 0.4, 0.7, prev=prev)
    assert torch.equal(logp, logp2) and torch.equal(mean, mean2)
    # and a different next latent has a lower density (the sampled one sits near the mean)
    _, logp_far, _, _ = sde.get(kind)(x, v, 0.6, 0.4, 0.7, prev=prev + 3.0)
    assert (logp_far < logp).all()


@pytest.mark.parametrize("kind", ["flow_grpo", "cps", "dance"])
def test_sampled_noise_has_the_stated_std(kind):
    # prev - mean = transition std * eps: flow_grpo's returned std is per unit time (times sqrt(-dt)).
    x, v = torch.zeros(1, 4, 64, 64), torch.zeros(1, 4, 64, 64)
    s, s2 = 0.6, 0.4
    prev, _, mean, std = sde.get(kind)(x, v, s, s2, 0.7, generator=torch.Generator().manual_seed(0))
    step_std = float(std) * (math.sqrt(s - s2) if kind == "flow_grpo" else 1.0)
    assert float((prev - mean).std()) == pytest.approx(step_std, rel=0.03)


@pytest.mark.parametrize("kind", KINDS)
def test_per_sample_sigmas_match_a_loop(kind):
    # vectorized [B] sigmas on 5-D latents == one call per sample with float sigmas (loop reference)
    g = torch.Generator().manual_seed(3)
    x, v = torch.randn(3, 2, 2, 4, 4, generator=g), torch.randn(3, 2, 2, 4, 4, generator=g)
    s, s2 = torch.tensor([1.0, 0.7, 0.3]), torch.tensor([0.8, 0.5, 0.0])
    noise = torch.randn(3, 2, 2, 4, 4, generator=g)
    prev_given = x + noise
    _, logp, mean, std = sde.get(kind)(x, v, s, s2, 0.5, prev=prev_given)
    for i in range(3):
        _, lp_i, m_i, std_i = sde.get(kind)(x[i:i + 1], v[i:i + 1], float(s[i]), float(s2[i]), 0.5,
                                             prev=prev_given[i:i + 1])
        assert torch.allclose(mean[i:i + 1], m_i, atol=1e-6)
        assert torch.allclose(logp[i], lp_i[0], atol=1e-5)
        assert torch.allclose(std[i], std_i[0])
    assert std.shape == (3, 1, 1, 1, 1)


def test_generator_list_gives_per_sample_noise():
    # sample i's draw depends only on its own generator: the same as running it alone
    x, v = torch.randn(3, 4, 5, 5), torch.randn(3, 4, 5, 5)
    gens = [torch.Generator().manual_seed(s) for s in (11, 12, 13)]
    prev, _, _, _ = sde.get("flow_grpo")(x, v, 0.5, 0.3, 0.7, generator=gens)
    for i, seed in enumerate((11, 12, 13)):
        alone = sde.get("flow_grpo")(x[i:i + 1], v[i:i + 1], 0.5, 0.3, 0.7,
                                     generator=[torch.Generator().manual_seed(seed)])[0]
        assert torch.equal(prev[i:i + 1], alone)
    with pytest.raises(ValueError, match="got 2 generators for a batch of 3"):
        sde.get("flow_grpo")(x, v, 0.5, 0.3, 0.7, generator=gens[:2])


def test_gradient_flows_through_mean_not_through_prev():
    x = torch.randn(2, 4, 3, 3)
    v = torch.randn(2, 4, 3, 3, requires_grad=True)
    prev = torch.randn(2, 4, 3, 3, requires_grad=True)
    _, logp, _, _ = sde.get("flow_grpo")(x, v, 0.5, 0.3, 0.7, prev=prev)
    logp.sum().backward()
    assert v.grad is not None and v.grad.abs().sum() > 0
    assert prev.grad is None


def test_fp32_math_on_bf16_inputs():
    x, v = torch.randn(2, 4, 3, 3).bfloat16(), torch.randn(2, 4, 3, 3).bfloat16()
    prev, logp, mean, _ = sde.get("flow_grpo")(x, v, 0.5, 0.3, 0.7, generator=torch.Generator())
    assert prev.dtype == logp.dtype == mean.dtype == torch.float32


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match=r"sigma must be a float or a \[B\]=2 tensor"):
        sde.get("cps")(torch.zeros(2, 1, 2, 2), torch.zeros(2, 1, 2, 2), torch.ones(3), 0.5, 0.5)
    with pytest.raises(ValueError, match="same shape"):
        sde.get("cps")(torch.zeros(2, 1, 2, 2), torch.zeros(2, 1, 2, 3), 0.5, 0.4, 0.5)
