"""Hand-computed aggregation modes (with loop references) and KL estimators."""

import math

import pytest
import torch

from mmgrpo import aggregation as G
from mmgrpo import kl as K

LOSS = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
MASK = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)


def test_modes_hand_computed():
    # seq_mean: mean((1+2)/2, 4/1) = (1.5 + 4) / 2 = 2.75
    assert G.aggregate(LOSS, MASK, "seq_mean").item() == pytest.approx(2.75)
    # token_mean: (1 + 2 + 4) / 3
    assert G.aggregate(LOSS, MASK, "token_mean").item() == pytest.approx(7 / 3)
    assert G.aggregate(LOSS, MASK, "token_mean_local").item() == pytest.approx(7 / 3)
    # dr_grpo: 7 / (N=2 * T_max=4)
    assert G.aggregate(LOSS, MASK, "dr_grpo", max_len=4).item() == pytest.approx(0.875)
    assert G.aggregate(LOSS, MASK, "dr_grpo").item() == pytest.approx(7 / 6)


def test_loop_reference_random():
    gen = torch.Generator().manual_seed(1)
    loss = torch.randn(6, 9, generator=gen)
    mask = torch.rand(6, 9, generator=gen) > 0.4
    mask[2] = False                                               # an empty sequence is skipped
    seqs = [sum(loss[i, t].item() for t in range(9) if mask[i, t]) / mask[i].sum().item()
            for i in range(6) if mask[i].any()]
    assert G.aggregate(loss, mask, "seq_mean").item() == pytest.approx(sum(seqs) / len(seqs), rel=1e-6)
    toks = [loss[i, t].item() for i in range(6) for t in range(9) if mask[i, t]]
    assert G.aggregate(loss, mask, "token_mean").item() == pytest.approx(sum(toks) / len(toks), rel=1e-6)


def test_global_normalizers_split_exactly():
    # token_mean over two halves with the global token count sums to the whole
    gen = torch.Generator().manual_seed(2)
    loss, mask = torch.randn(8, 5, generator=gen), torch.rand(8, 5, generator=gen) > 0.3
    for mode in ("seq_mean", "token_mean", "dr_grpo"):
        ctx = {"num_seqs": float((mask.sum(1) > 0).sum()), "num_tokens": float(mask.sum()), "num_samples": 8.0}
        whole = G.aggregate(loss, mask, mode, **ctx)
        halves = G.aggregate(loss[:4], mask[:4], mode, **ctx) + G.aggregate(loss[4:], mask[4:], mode, **ctx)
        assert halves.item() == pytest.approx(whole.item(), rel=1e-6), mode


def test_kl_estimators_hand_computed():
    logp, ref = torch.tensor([[math.log(0.5)]]), torch.tensor([[math.log(0.25)]])
    assert K.get("k1")(logp, ref).item() == pytest.approx(math.log(2))                 # 0.6931
    assert K.get("k2")(logp, ref).item() == pytest.approx(0.5 * math.log(2) ** 2)      # 0.2402
    assert K.get("k3")(logp, ref).item() == pytest.approx(0.5 + math.log(2) - 1)       # 0.1931
    same = torch.tensor([[0.3]])
    assert all(K.get(k)(same, same).item() == 0 for k in K.names())


def test_unknown_mode_lists_valid_names():
    with pytest.raises(KeyError, match="valid names: .*seq_mean.*token_mean"):
        G.aggregate(LOSS, MASK, "sum")
