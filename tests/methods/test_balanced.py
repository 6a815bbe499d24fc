"""Balanced Aggregation (S4): hand-computed weights, the token-mean identity, micro-batch invariance."""

import pytest
import torch

import mmgrpo.methods  # noqa: F401  (registers the catalog)
from mmgrpo import aggregation as G
from mmgrpo.methods.balanced import balanced

close = torch.testing.assert_close


def lengths_mask(*lengths, t=None):
    t = t or max(lengths)
    return torch.arange(t).expand(len(lengths), t) < torch.tensor(lengths).unsqueeze(1)


def test_balanced_hand_computed():
    # A = [+1, +1, -1], lengths [1, 3, 4]: n+ = 2, n- = 1, n = 3; T+ = 4, T- = 4
    # positive tokens weigh (2/3) / 4 = 1/6, negative tokens (1/3) / 4 = 1/12
    mask = lengths_mask(1, 3, 4)
    w = balanced(mask, advantages=torch.tensor([1.0, 2.0, -1.0]))
    expect = torch.tensor([[1 / 6, 0, 0, 0], [1 / 6, 1 / 6, 1 / 6, 0], [1 / 12] * 4])
    close(w, expect)
    # with a loss of 1 everywhere: (2/3) * 1 + (1/3) * 1 = 1
    assert G.aggregate(torch.ones(3, 4), mask, "balanced", advantages=torch.tensor([1.0, 2.0, -1.0])).item() == \
        pytest.approx(1.0)


def test_balanced_equals_token_mean_when_every_advantage_has_the_same_sign():
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(6, 7, generator=g) > 0.3
    mask[:, 0] = True
    loss = torch.randn(6, 7, generator=g)
    for adv in (torch.rand(6, generator=g) + 0.1, -torch.rand(6, generator=g) - 0.1):
        close(G.aggregate(loss, mask, "balanced", advantages=adv), G.aggregate(loss, mask, "token_mean"))


def test_balanced_loop_reference_with_dense_advantages_and_zero_bucket():
    g = torch.Generator().manual_seed(1)
    mask = torch.rand(8, 5, generator=g) > 0.3
    mask[:, 0] = True
    adv = torch.randn(8, 5, generator=g)
    adv[3] = 0.0
    loss = torch.randn(8, 5, generator=g)
    got = G.aggregate(loss, mask, "balanced", advantages=adv)
    buckets: dict = {}
    for i in range(8):
        a = (adv[i] * mask[i]).sum() / mask[i].sum()
        key = 1 if a > 0 else (-1 if a < 0 else 0)
        buckets.setdefault(key, []).append(i)
    ref = 0.0
    for members in buckets.values():
        tok = sum(loss[i][mask[i]].sum() for i in members)
        cnt = sum(mask[i].sum() for i in members)
        ref += len(members) / 8 * tok / cnt
    assert got.item() == pytest.approx(float(ref), rel=1e-6)


def test_balanced_step_counts_make_micro_batches_add_up_to_the_whole_step():
    g = torch.Generator().manual_seed(2)
    mask = torch.rand(8, 6, generator=g) > 0.3
    mask[:, 0] = True
    adv = torch.randn(8, generator=g)
    loss = torch.randn(8, 6, generator=g)
    whole = G.aggregate(loss, mask, "balanced", advantages=adv)
    counts = balanced.step_counts(mask, adv)                    # what a trainer all-sums over the step
    parts = sum(G.aggregate(loss[s], mask[s], "balanced", advantages=adv[s], step_counts=counts)
                for s in (slice(0, 3), slice(3, 8)))
    close(parts, whole)
    assert counts == [float(x) for x in counts] and len(counts) == 6


def test_balanced_needs_advantages():
    with pytest.raises(ValueError, match="advantages"):
        balanced(torch.ones(2, 2, dtype=torch.bool))
