"""Hand-computed advantage estimators and a loop reference for the vectorized group statistics."""

import math

import pytest
import torch

from mmgrpo import advantages as A


def loop_group_stats(r, g):
    mean, std = torch.zeros_like(r), torch.zeros_like(r)
    for i in range(len(r)):
        members = [r[j].item() for j in range(len(r)) if g[j] == g[i]]
        m = sum(members) / len(members)
        mean[i] = m
        std[i] = math.sqrt(sum((x - m) ** 2 for x in members) / len(members))
    return mean, std


def test_group_mean_std_matches_loop():
    gen = torch.Generator().manual_seed(0)
    r = torch.randn(37, generator=gen)
    g = torch.randint(0, 7, (37,), generator=gen) * 13 + 5          # arbitrary, non-contiguous ids
    mean, std, count = A.group_mean_std(r, g)
    lm, ls = loop_group_stats(r, g)
    torch.testing.assert_close(mean, lm, atol=1e-6, rtol=0)
    torch.testing.assert_close(std, ls, atol=1e-6, rtol=0)
    assert count.sum() == sum((g == gi).sum() for gi in g)


def test_grpo_hand_computed():
    # group 0: [1, 3] -> mean 2, population std 1 -> A = [-1, 1] / (1 + 1e-4)
    # group 1: [0, 0, 3] -> mean 1, std sqrt((1 + 1 + 4) / 3) = sqrt(2) -> A = [-1, -1, 2] / (sqrt(2) + 1e-4)
    r = torch.tensor([1.0, 3.0, 0.0, 0.0, 3.0])
    g = torch.tensor([0, 0, 1, 1, 1])
    s2 = math.sqrt(2) + 1e-4
    expected = torch.tensor([-1 / 1.0001, 1 / 1.0001, -1 / s2, -1 / s2, 2 / s2])
    torch.testing.assert_close(A.get("grpo")(r, g), expected)


def test_grpo_unbiased_std():
    # [1, 3]: unbiased std = sqrt(((1-2)^2 + (3-2)^2) / 1) = sqrt(2)
    out = A.grpo(torch.tensor([1.0, 3.0]), torch.tensor([0, 0]), unbiased=True, eps=0.0)
    torch.testing.assert_close(out, torch.tensor([-1 / math.sqrt(2), 1 / math.sqrt(2)]))


def test_grpo_batch_std_hand_computed():
    # batch [1,3,0,0,3]: mean 1.4, var = (0.16+2.56+1.96+1.96+2.56)/5 = 1.84; group means [2,2,1,1,1]
    r = torch.tensor([1.0, 3.0, 0.0, 0.0, 3.0])
    g = torch.tensor([0, 0, 1, 1, 1])
    std = math.sqrt(1.84) + 1e-4
    expected = torch.tensor([-1.0, 1.0, -1.0, -1.0, 2.0]) / std
    torch.testing.assert_close(A.get("grpo_batch_std")(r, g), expected)


def test_dr_grpo_and_rloo_hand_computed():
    r = torch.tensor([1.0, 3.0, 5.0, 7.0])
    g = torch.tensor([0, 0, 0, 1])
    # dr_grpo: group mean 3 -> [-2, 0, 2]; a group of one -> 0
    torch.testing.assert_close(A.get("dr_grpo")(r, g), torch.tensor([-2.0, 0.0, 2.0, 0.0]))
    # rloo: 1 - (3+5)/2 = -3; 3 - (1+5)/2 = 0; 5 - (1+3)/2 = 3; a group of one -> 0
    torch.testing.assert_close(A.get("rloo")(r, g), torch.tensor([-3.0, 0.0, 3.0, 0.0]))


def test_clip_and_zero_std_mask():
    torch.testing.assert_close(A.clip_advantages(torch.tensor([-7.0, 2.0, 9.0]), 5.0), torch.tensor([-5.0, 2.0, 5.0]))
    assert A.clip_advantages(torch.tensor([9.0]), None).item() == 9.0
    mask = A.zero_std_mask(torch.tensor([1.0, 1.0, 0.0, 1.0]), torch.tensor([0, 0, 1, 1]))
    assert mask.tolist() == [True, True, False, False]


def test_normalize_then_sum_hand_computed():
    # reward a: group [0, 2] -> z = [-1, 1]; reward b: group [5, 5] -> z = [0, 0] (std 0 -> 0/eps = 0)
    # (exactly z = [-1, 1] / (1 + 1e-4) = +-0.9999); weighted (1, 3) sum: [-0.9999, 0.9999];
    # batch z-score: mean 0, population std 0.9999 -> +-0.9999 / (0.9999 + 1e-4) = +-0.9999
    r = torch.tensor([[0.0, 5.0], [2.0, 5.0]])
    out = A.normalize_then_sum(r, torch.tensor([0, 0]), torch.tensor([1.0, 3.0]))
    z = 1 / 1.0001
    torch.testing.assert_close(out, torch.tensor([-z, z]) / (z + 1e-4), atol=1e-6, rtol=0)
    # a NaN entry contributes 0 for that reward
    r2 = torch.tensor([[0.0, float("nan")], [2.0, 1.0]])
    assert torch.isfinite(A.normalize_then_sum(r2, torch.tensor([0, 0]), torch.tensor([1.0, 1.0]))).all()


def test_unknown_estimator_lists_valid_names():
    with pytest.raises(KeyError, match="valid names: .*grpo.*rloo"):
        A.get("nope")
