"""Low-dimensional exploration: SDE noise in a subspace with the exact log-density of the projected Gaussian."""

import math

import pytest
import torch
from contract import check_replay

from mmgrpo.modalities.flow import sde
from mmgrpo.modalities.flow.policy import FlowPolicy, NoiseSubspaceConfig
from mmgrpo.modalities.flow.sde import NoiseSubspace
from mmgrpo.modalities.flow.tiny import tiny_sd3_pipeline
from tests.flow.test_contract import TINY, make_batch, perturb_lora

KINDS = ("flow_grpo", "cps", "dance")
NOISE = {"flow_grpo": 0.7, "cps": 0.8, "dance": 0.3}


def _inputs(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", [(3, 2, 4, 4), (2, 2, 3, 4, 4)])       # image and video latents
def test_block_factor_one_is_the_full_step_bit_for_bit(kind, shape):
    x, v = _inputs(shape)
    full = sde.get(kind)(x, v, 0.8, 0.6, NOISE[kind], generator=torch.Generator().manual_seed(5))
    sub = sde.get(kind)(x, v, 0.8, 0.6, NOISE[kind], generator=torch.Generator().manual_seed(5),
                        subspace=NoiseSubspace("block", 1))
    for a, b in zip(full, sub):
        assert torch.equal(a, b)
    # and on replay of a given next latent
    prev = torch.randn(shape, generator=torch.Generator().manual_seed(9))
    assert torch.equal(sde.get(kind)(x, v, 0.8, 0.6, NOISE[kind], prev=prev)[1],
                       sde.get(kind)(x, v, 0.8, 0.6, NOISE[kind], prev=prev, subspace=NoiseSubspace("block", 1))[1])


def test_block_subspace_2x2_by_hand():
    # one 2x2 latent channel, block factor 2: P = [1/2, 1/2, 1/2, 1/2]^T (k = 1), amplitude gain g = 2.
    # prev - mean = [[1, 2], [3, 4]]  ->  P^T d = 10 / 2 = 5;  with step std 1: e = 5 / (2 * 1) = 2.5
    # log p = -e^2/2 - log(g * std) - log(2 pi)/2 = -3.125 - log 2 - 0.9189385
    ns = NoiseSubspace("block", 2)
    mean = torch.zeros(1, 1, 2, 2)
    prev = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    assert ns.reduce(prev - mean).item() == pytest.approx(5.0)
    logp = sde._gaussian_or_subspace(prev, mean, torch.ones(1, 1, 1, 1), ns)
    assert logp.item() == pytest.approx(-3.125 - math.log(2) - 0.5 * math.log(2 * math.pi), abs=1e-6)
    # the noise is block-constant with the full step's per-pixel amplitude: g P e = 2 * e / 2 = e everywhere
    noise = sde.step_noise(mean, torch.Generator().manual_seed(0), ns)
    e = torch.randn(1, 1, 1, 1, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(noise, e.expand(1, 1, 2, 2))
    # projection gain: g = 1, noise e / 2 per pixel, e = P^T d / std = 5
    pj = NoiseSubspace("block", 2, gain="projection")
    assert sde._gaussian_or_subspace(prev, mean, torch.ones(1, 1, 1, 1), pj).item() == pytest.approx(
        -12.5 - 0.5 * math.log(2 * math.pi), abs=1e-5)


@pytest.mark.parametrize("kind", ["block", "lowfreq"])
def test_bases_are_orthonormal_and_noise_lives_in_the_subspace(kind):
    ns = NoiseSubspace(kind, 4)
    b = ns.basis(8)
    assert b.shape == (8, 2) and torch.allclose(b.T @ b, torch.eye(2), atol=1e-6)
    x = torch.zeros(3, 2, 8, 8)
    noise = sde.step_noise(x, [torch.Generator().manual_seed(i) for i in range(3)], ns)
    # in the span: P P^T noise == noise; per-sample generators make each sample's noise its own
    assert torch.allclose(ns.lift(ns.reduce(noise), x), noise, atol=1e-5)
    one = sde.step_noise(x[:1], [torch.Generator().manual_seed(1)], ns)
    assert torch.allclose(one[0], noise[1])


@pytest.mark.parametrize("kind", ["flow_grpo", "dance"])
def test_subspace_log_prob_is_the_k_dim_gaussian_density(kind):
    # sample in a 2 x (2x2) = 8-dim subspace of a 2x4x4 latent and compare with torch's Normal on P^T(prev-mean)
    x, v = _inputs((2, 2, 4, 4))
    ns = NoiseSubspace("lowfreq", 2)
    prev, lp, mean, std = sde.get(kind)(x, v, 0.8, 0.6, NOISE[kind], generator=torch.Generator().manual_seed(1),
                                        subspace=ns)
    step_std = std * math.sqrt(0.2) if kind == "flow_grpo" else std          # transition std
    y = ns.reduce(prev - mean)                                                  # orthonormal coordinates [2,2,2,2]
    ref = torch.distributions.Normal(0.0, ns.gain_value() * step_std).log_prob(y).mean(dim=(1, 2, 3))
    assert torch.allclose(lp, ref, atol=1e-5)
    assert torch.allclose(ns.lift(y, x), prev - mean, atol=1e-5)              # the step moved only in the subspace


def test_gradient_flows_through_the_mean_and_kl_is_measured_in_the_subspace():
    x, v = _inputs((2, 1, 4, 4))
    v.requires_grad_(True)
    ns = NoiseSubspace("block", 2)
    prev, lp, mean, std = sde.flow_grpo_step(x, v, 0.8, 0.6, 0.7, generator=torch.Generator().manual_seed(3),
                                             subspace=ns)
    lp.sum().backward()
    assert v.grad is not None and v.grad.abs().sum() > 0
    # a mean difference orthogonal to the subspace (a checkerboard inside each 2x2 block) costs no KL
    d = torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).repeat(2, 2)[None, None].expand(2, 1, 4, 4)
    m = mean.detach()
    assert sde.subspace_mean_kl(m + d, m, std, ns).abs().max() < 1e-10
    assert sde.subspace_mean_kl(m + d, m, std, None).min() > 0
    # a block-constant difference c costs c^2 / (2 std^2) in both
    c = torch.full((2, 1, 4, 4), 0.3)
    assert torch.allclose(sde.subspace_mean_kl(m + c, m, std, ns), sde.subspace_mean_kl(m + c, m, std, None))


def test_bad_subspaces_are_refused_with_the_rule():
    with pytest.raises(ValueError, match="kind must be one of"):
        NoiseSubspace("dct", 2)
    with pytest.raises(ValueError, match="must divide the latent side"):
        NoiseSubspace("block", 3).reduce(torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="one factor per denoising step"):
        FlowPolicy.from_pipeline(tiny_sd3_pipeline(seed=0), FlowPolicy.Config(
            **TINY, noise_subspace=NoiseSubspaceConfig("block", [2, 2])))


@pytest.mark.parametrize("overrides", [
    dict(sde="flow_grpo", guidance_scale=4.5, noise_subspace=NoiseSubspaceConfig("block", 2)),
    dict(sde="cps", noise_level=0.8, guidance_scale=1.0, cfg_in_training=False, schedule="window", window_size=2,
         noise_subspace=NoiseSubspaceConfig("lowfreq", 4)),
    dict(sde="dance", noise_level=0.3, shared_group_noise=True, guidance_scale=2.0, schedule="window",
         window_size=1, noise_subspace=NoiseSubspaceConfig("block", [4, 2, 1, 1])),   # per-step factors
])
def test_policy_replay_contract_holds_with_a_subspace(overrides):
    policy = FlowPolicy.from_pipeline(tiny_sd3_pipeline(seed=0), FlowPolicy.Config(**{**TINY, **overrides}))
    perturb_lora(policy)
    rollout = check_replay(policy, make_batch(), splits=[1, 4, 6])
    st = rollout.state
    ns = policy.cfg.noise_subspace
    for j in range(rollout.num_positions):     # every recorded step moved only within its step's subspace
        for i in range(len(rollout)):
            sub = ns.for_step(int(st.steps[i, j]))
            d = st.next_latents[i, j] - st.latents[i, j]
            with torch.no_grad():
                _, mean, _ = policy._step_means(rollout.select(torch.tensor([i])), j,
                                                policy._model_cond(st.cond.select(torch.tensor([i]))))
            r = d[None] - (mean - st.latents[i, j][None])
            assert torch.allclose(sub.lift(sub.reduce(r), r), r, atol=1e-4)
    kl = policy.reference_kl(rollout, slice(0, rollout.num_positions))
    assert kl.shape == rollout.log_probs.shape and (kl >= 0).all() and kl.sum() > 0
