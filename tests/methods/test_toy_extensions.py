"""The toy policy's optional fields, early stop, perturbation hook and brevity reward (used by the catalog)."""

import pytest
import torch
from contract import check_replay  # the shared adapter contract (tests/conftest.py puts tests/ on sys.path)

from mmgrpo.groups import GroupSampler
from mmgrpo.pipelines.toy_tokens import ToyTokenPolicy, target_tokens

from .toyworld import PROMPTS, length_reward, match_reward, toy_policy


def batch(n_groups=4, g=4, step=0, seed=0, prompts=None):
    return GroupSampler(prompts or PROMPTS, g, n_groups * g, seed).local_batch(step)


def test_default_rollouts_fill_every_optional_field():
    pol = toy_policy()
    with torch.no_grad():
        r = pol.sample(batch())
    n, t = r.log_probs.shape
    assert r.segment_ids.tolist()[0] == [0, 0, 1, 1]                        # segments of 2 positions
    assert torch.equal(r.stratum_ids, r.token_ids[:, 0] % 2)
    assert r.mask.all()                                                       # no stop token: fixed length
    target = target_tokens(torch.tensor([int(c) for c in r.conds]), t, 8, 3)
    assert torch.equal(r.extras["token_flags"], r.token_ids != target)        # the exact "process reward model"
    # the probe value after the last position is the partial reward reached
    reward = match_reward()(r.outputs, r.conds)
    torch.testing.assert_close(r.extras["segment_values"][:, -1], reward)
    assert set(ToyTokenPolicy.provides) >= {"segment_ids", "stratum_ids", "segment_values", "token_flags"}


def test_probe_value_hand_computed():
    # V_t = (hits so far + sum_{s > t} pi(target_s | target_{s-1})) / L: at t = 0 with a hit and a policy giving
    # the target probability q_s, V_0 = (1 + q_1 + q_2 + q_3) / 4
    pol = toy_policy()
    b = batch(1, 1)
    with torch.no_grad():
        r = pol.sample(b)
        c = torch.tensor([int(x) for x in r.conds])
        target = target_tokens(c, 4, 8, 3)
        q = pol._teacher_forced(c, target, slice(0, 4)).exp()
    hit0 = float(r.token_ids[0, 0] == target[0, 0])
    assert r.extras["segment_values"][0, 0].item() == pytest.approx((hit0 + q[0, 1:].sum().item()) / 4, rel=1e-6)


def test_stop_token_gives_variable_lengths_and_keeps_the_replay_contract():
    pol = toy_policy(stop_token=0)
    with torch.no_grad():
        r = pol.sample(batch(8, 4))
    lengths = r.mask.sum(1)
    assert lengths.min() < 4 and lengths.max() == 4                         # some samples stopped early
    assert (r.outputs[~r.mask] == -1).all() and (r.outputs[r.mask] >= 0).all()
    stopped = lengths < 4
    last = r.token_ids[stopped].gather(1, (lengths[stopped] - 1).unsqueeze(1)).squeeze(1)
    assert (last == 0).all()                                                  # each stopped at the stop token
    torch.testing.assert_close(length_reward()(r.outputs, r.conds), 1 - lengths.float() / 4)
    check_replay(toy_policy(stop_token=0), batch(4, 4), splits=[16, 3])


def test_perturbed_conditions_shift_the_policy_but_not_the_task():
    pol = toy_policy()
    b = batch(2, 4)
    pert = pol.perturb_conditions(b.conds, torch.arange(len(b)) + 11)
    assert all(p.split("|")[0] == c for p, c in zip(pert, b.conds))
    assert pol.perturb_conditions(b.conds, torch.arange(len(b)) + 11) == pert      # deterministic
    b2 = type(b)(pert, b.group_ids, b.seeds, b.group_seeds, b.step)
    with torch.no_grad():
        plain, shifted = pol.sample(b), pol.sample(b2)
    assert not torch.allclose(plain.entropy, shifted.entropy)                       # the distribution moved
    # the reward reads only the task: same tokens -> same reward whatever the perturbation
    torch.testing.assert_close(match_reward()(shifted.outputs, pert), match_reward()(shifted.outputs, b.conds))
    check_replay(toy_policy(), b2, splits=[8, 3])                                    # ratio 1 on perturbed prompts
