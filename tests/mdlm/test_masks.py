"""Hand-computed Gauss-Legendre nodes, per-node mask counts, exact-count masks and the decoding schedule."""

import math

import pytest
import torch

from mmgrpo.modalities.mdlm import masks as M
from mmgrpo.modalities.mdlm.sampling import Schedule, transfer_counts


def test_gauss_legendre_two_and_three_nodes_by_hand():
    # n=2 on [-1, 1]: +-1/sqrt(3), weights 1, 1 -> on [0, 1]: 0.5 -+ 0.5/sqrt(3) = 0.21132, 0.78868, weights 1/2
    t, w = M.gauss_legendre(2)
    torch.testing.assert_close(t, torch.tensor([0.5 - 0.5 / math.sqrt(3), 0.5 + 0.5 / math.sqrt(3)], dtype=torch.double))
    torch.testing.assert_close(w, torch.tensor([0.5, 0.5], dtype=torch.double))
    # n=3: 0, +-sqrt(3/5), weights 8/9, 5/9 -> 0.5 -+ 0.5 sqrt(0.6) = 0.11270, 0.5, 0.88730; 5/18, 8/18, 5/18
    t, w = M.gauss_legendre(3)
    r = 0.5 * math.sqrt(0.6)
    torch.testing.assert_close(t, torch.tensor([0.5 - r, 0.5, 0.5 + r], dtype=torch.double))
    torch.testing.assert_close(w, torch.tensor([5 / 18, 8 / 18, 5 / 18], dtype=torch.double))
    with pytest.raises(ValueError, match="nodes must be >= 1"):
        M.gauss_legendre(0)


def test_per_node_mask_counts_by_hand():
    t2, _ = M.gauss_legendre(2)
    assert M.node_counts(t2, 8).tolist() == [2, 6]          # round(1.691) = 2, round(6.309) = 6
    t3, _ = M.gauss_legendre(3)
    assert M.node_counts(t3, 8).tolist() == [1, 4, 7]       # round(0.902), round(4), round(7.098)
    assert M.node_counts(t3, 2).tolist() == [1, 1, 2]       # round(0.225) = 0 is clamped to 1; round(1.775) = 2
    assert M.node_counts(t3, 4).tolist() == [1, 2, 4]       # round(0.451) -> 1, round(2), round(3.549) = 4


def test_exact_count_masks_have_the_counts_and_follow_each_sample_seed():
    seeds = torch.tensor([11, 12, 13])
    m = M.exact_count_masks(M.sample_generators(seeds, 5), 6, torch.tensor([0, 3, 6]))
    assert m.sum(1).tolist() == [0, 3, 6]
    alone = M.exact_count_masks(M.sample_generators(seeds[1:2], 5), 6, torch.tensor([3]))
    assert torch.equal(alone[0], m[1])                      # a sample's mask ignores its batch neighbours
    other = M.exact_count_masks(M.sample_generators(seeds, 6), 6, torch.tensor([3, 3, 3]))
    again = M.exact_count_masks(M.sample_generators(seeds, 6), 6, torch.tensor([3, 3, 3]))
    assert torch.equal(other, again)


def test_exact_count_masks_are_uniform_over_subsets():
    gens = M.sample_generators(torch.arange(6000), 0)
    m = M.exact_count_masks(gens, 4, torch.full((6000,), 2))        # 6 subsets of size 2, each 1/6
    codes = (m.long() * torch.tensor([1, 2, 4, 8])).sum(1)
    freq = torch.stack([(codes == c).float().mean() for c in codes.unique()])
    assert len(freq) == 6 and (freq - 1 / 6).abs().max() < 0.02     # 3 sigma ~ 0.014


def test_bernoulli_prompt_masks_rate():
    m = M.bernoulli_masks(M.sample_generators(torch.arange(400), 1), 50, 0.3)
    assert abs(float(m.float().mean()) - 0.3) < 0.01                 # 20,000 draws: sigma 0.003


def test_salt_reads_the_generator_seed_without_consuming_it():
    g = torch.Generator().manual_seed(42)
    before = g.get_state().clone()
    assert M.salt_of(g) == 42 and M.salt_of(None) == 0
    assert torch.equal(g.get_state(), before)


def test_transfer_counts_and_schedule_validation():
    assert transfer_counts(5, 2) == [3, 2]
    assert transfer_counts(4, 4) == [1, 1, 1, 1]
    assert transfer_counts(8, 3) == [3, 3, 2]
    s = Schedule(gen_length=8, block_length=4, steps=4)
    assert (s.blocks, s.steps_per_block) == (2, 2)
    with pytest.raises(ValueError, match="multiple of block_length"):
        Schedule(6, 4, 2)
    with pytest.raises(ValueError, match="steps=3 must be a multiple of the 2 blocks"):
        Schedule(8, 4, 3)
    with pytest.raises(ValueError, match="at most block_length"):
        Schedule(4, 2, 6)
