"""Groupwise rewards (rank within group, leave-one-out set diversity) and the weighted sum."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from conftest import PROMPTS, random_images

from mmgrpo.rewards.compose import WeightedSum
from mmgrpo.rewards.groupwise import (
    GroupDiversityReward,
    GroupRankReward,
    group_rank,
    leave_one_out_diversity,
    set_diversity,
)
from mmgrpo.rewards.image.jpeg import JpegCompressibility, JpegIncompressibility

nan = float("nan")


def rank_loop(scores, group_ids):
    """Loop reference for group_rank."""
    out = []
    for i, s in enumerate(scores.tolist()):
        if math.isnan(s):
            out.append(nan)
            continue
        others = [t for j, t in enumerate(scores.tolist()) if j != i and group_ids[j] == group_ids[i] and not math.isnan(t)]
        if not others:
            out.append(0.5)
            continue
        out.append((sum(t < s for t in others) + 0.5 * sum(t == s for t in others)) / len(others))
    return torch.tensor(out)


def test_group_rank_hand_computed():
    scores = torch.tensor([3.0, 1.0, 2.0, 2.0, 5.0, nan, 7.0])
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 2])
    # group 0 = [3, 1, 2, 2]: 3 beats all 3 others -> 1; 1 beats none -> 0; each 2 beats the 1 and ties the
    # other 2 -> (1 + 0.5) / 3 = 0.5. group 1: 5 is alone among valid members -> 0.5, NaN stays NaN.
    # group 2: a single member -> 0.5.
    expected = torch.tensor([1.0, 0.0, 0.5, 0.5, 0.5, nan, 0.5])
    torch.testing.assert_close(group_rank(scores, groups), expected, equal_nan=True)


def test_group_rank_matches_loop_on_random_groups():
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 4, (40,), generator=g).float()  # many ties
    scores[torch.randperm(40, generator=g)[:5]] = nan
    groups = torch.randint(0, 6, (40,), generator=g)
    torch.testing.assert_close(group_rank(scores, groups), rank_loop(scores, groups), equal_nan=True)


def test_set_and_leave_one_out_diversity_hand_computed():
    e1, e2 = torch.eye(2)
    feats = torch.stack([e1, e1, e2])
    # pairs: (e1, e1) = 1, (e1, e2) = 0, (e1, e2) = 0 -> mean 1/3 -> D = 2/3.
    assert set_diversity(feats).item() == pytest.approx(2 / 3)
    # without member 0 or 1: {e1, e2} -> D = 1, contribution 2/3 - 1 = -1/3 (a duplicate is penalized);
    # without member 2: {e1, e1} -> D = 0, contribution 2/3 (the unique one is rewarded).
    loo = leave_one_out_diversity(feats, torch.zeros(3, dtype=torch.long))
    torch.testing.assert_close(loo, torch.tensor([-1 / 3, -1 / 3, 2 / 3]))
    # Two members: D(pair) - D(singleton = 0) = 1 - cos; a lone member: not applicable.
    two = leave_one_out_diversity(torch.stack([e1, (e1 + e2) / 2]), torch.tensor([4, 4]))
    torch.testing.assert_close(two, torch.full((2,), 1 - 1 / math.sqrt(2)))
    assert torch.isnan(leave_one_out_diversity(e1[None], torch.tensor([0]))).all()


def test_leave_one_out_matches_recomputing_each_subset():
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(13, 5, generator=g)
    groups = torch.tensor([0] * 5 + [1] * 4 + [2] * 3 + [3])
    loo = leave_one_out_diversity(feats, groups)
    for i in range(13):
        members = (groups == groups[i]).nonzero()[:, 0].tolist()
        if len(members) == 1:
            assert math.isnan(loo[i])
            continue
        rest = [j for j in members if j != i]
        ref = set_diversity(feats[members]) - set_diversity(feats[rest])
        assert loo[i].item() == pytest.approx(ref.item(), abs=1e-5)
        # and set_diversity itself against the pairwise loop
        pairs = list(itertools.combinations(members, 2))
        cos = [torch.nn.functional.cosine_similarity(feats[a], feats[b], dim=0).item() for a, b in pairs]
        assert set_diversity(feats[members]).item() == pytest.approx(1 - sum(cos) / len(cos), abs=1e-5)


def test_group_rank_reward_wraps_pointwise_reward():
    flat = torch.full((1, 3, 32, 32), 0.5)
    noisy = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    images = torch.cat([flat, noisy, flat])
    reward = GroupRankReward(GroupRankReward.Config(reward={"_component_": "mmgrpo.rewards.image.jpeg:JpegCompressibility"}))
    assert reward.groupwise and reward.name == "group_rank[jpeg_compressibility]"
    out = reward(images, PROMPTS[:4], group_ids=torch.tensor([0, 0, 0, 1]))
    base = JpegCompressibility()(images, PROMPTS[:4])
    torch.testing.assert_close(out, group_rank(base, torch.tensor([0, 0, 0, 1])))
    assert out[0] == 1.0 and out[3] == 0.5  # the flat image compresses best in its group; last one is alone
    with pytest.raises(ValueError, match="needs group_ids"):
        reward(images, PROMPTS[:4])
    with pytest.raises(ValueError, match="3 entries for 4 samples"):
        reward(images, PROMPTS[:4], group_ids=[0, 0, 1])


def test_group_diversity_reward_flatten_and_clip(clip_dir):
    e1, e2 = torch.eye(2)
    flat = GroupDiversityReward(GroupDiversityReward.Config(features="flatten"))
    out = flat(torch.stack([e1, e1, e2, e2]), ["a"] * 4, group_ids=torch.tensor([0, 0, 0, 1]))
    torch.testing.assert_close(out, torch.tensor([-1 / 3, -1 / 3, 2 / 3, nan]), equal_nan=True)

    clip = GroupDiversityReward(GroupDiversityReward.Config(checkpoint=clip_dir, batch_size=3))
    images = random_images(6, seed=3)
    images[1] = images[0]  # a duplicate inside group 0
    gid = torch.tensor([0, 0, 0, 1, 1, 1])
    out = clip(images, PROMPTS[:6], group_ids=gid)
    assert out.shape == (6,) and out.dtype == torch.float32
    # group-local: scoring group 1 alone gives the same values
    torch.testing.assert_close(clip(images[3:], PROMPTS[3:6], group_ids=gid[3:]), out[3:], atol=1e-5, rtol=0)
    # Feature reference: the same leave-one-out values from CLIP features computed once.
    torch.testing.assert_close(out, leave_one_out_diversity(clip.clip.image_features(images), gid), atol=1e-6, rtol=0)
    assert out[0] == out[1] and out[2] > out[0]  # the duplicates contribute less than the distinct member
    texts = GroupDiversityReward(GroupDiversityReward.Config(features="clip_text", checkpoint=clip_dir))
    assert torch.isfinite(texts(["a dog", "a dog", "a cat"], ["", "", ""], group_ids=torch.zeros(3))).all()
    with pytest.raises(TypeError, match="list of strings"):
        texts(images[:3], PROMPTS[:3], group_ids=torch.zeros(3))


class Fixed:
    """A pointwise reward with fixed scores (a plain reward object, as a third-party one would be)."""

    def __init__(self, name, values, groupwise=False):
        self.name, self.values, self.groupwise = name, torch.tensor(values), groupwise
        self.seen = None

    def __call__(self, outputs, conds, **kwargs):
        self.seen = kwargs
        return self.values


def test_weighted_sum_hand_computed_and_nan():
    a = Fixed("a", [1.0, 2.0, nan])
    b = Fixed("b", [10.0, nan, 30.0], groupwise=True)
    s = WeightedSum(WeightedSum.Config(), members=[(a, 0.5), (b, -1.0)])
    # 0.5*1 - 10 = -9.5; 0.5*2 + NaN -> NaN; NaN - 30 -> NaN
    torch.testing.assert_close(s(None, ["x"] * 3, group_ids=torch.tensor([0, 0, 1])),
                               torch.tensor([-9.5, nan, nan]), equal_nan=True)
    assert s.groupwise and b.seen["group_ids"].tolist() == [0, 0, 1]
    torch.testing.assert_close(s.last_scores["b"], torch.tensor([10.0, nan, 30.0]), equal_nan=True)
    # nan_as = 0: 0.5*2 + 0 = 1.0; 0.5*0 - 30 = -30
    s0 = WeightedSum(WeightedSum.Config(nan_as=0.0), members=[(a, 0.5), (b, -1.0)])
    torch.testing.assert_close(s0(None, ["x"] * 3), torch.tensor([-9.5, 1.0, -30.0]))


def test_weighted_sum_builds_members_from_specs():
    images = torch.cat([torch.full((1, 3, 32, 32), 0.3), torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))])
    spec = WeightedSum.Config(rewards=[
        {"_component_": "mmgrpo.rewards.image.jpeg:JpegCompressibility", "weight": 2.0},
        {"_component_": "mmgrpo.rewards.image.jpeg:JpegIncompressibility", "quality": 50},
    ])
    s = WeightedSum(spec)
    comp, incomp50 = JpegCompressibility()(images, ["", ""]), JpegIncompressibility(JpegIncompressibility.Config(quality=50))(images, ["", ""])
    torch.testing.assert_close(s(images, ["", ""]), 2.0 * comp + incomp50)
    assert s.member_names == ["jpeg_compressibility", "jpeg_incompressibility"] and not s.groupwise
    dup = WeightedSum(WeightedSum.Config(rewards=[{"_component_": "mmgrpo.rewards.image.jpeg:JpegCompressibility"}] * 2))
    assert dup.member_names == ["jpeg_compressibility#0", "jpeg_compressibility#1"]
    with pytest.raises(ValueError, match=r"weighted_sum.rewards\[0\].weight"):
        WeightedSum(WeightedSum.Config(rewards=[{"_component_": "mmgrpo.rewards.image.jpeg:JpegCompressibility", "weight": "x"}]))
    with pytest.raises(ValueError, match="quality"):
        WeightedSum(WeightedSum.Config(rewards=[{"_component_": "mmgrpo.rewards.image.jpeg:JpegCompressibility", "qualty": 5}]))
    with pytest.raises(ValueError, match="at least one member"):
        WeightedSum(WeightedSum.Config())
    with pytest.raises(ValueError, match="returned 2 scores for 3 samples"):
        WeightedSum(WeightedSum.Config(), members=[(Fixed("a", [1.0, 2.0]), 1.0)])(None, ["x"] * 3)
