"""benchmarks/gradient_snr.py: its estimate by hand, and the instrument finds signal where there is some."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def snr():
    spec = importlib.util.spec_from_file_location("gradient_snr", ROOT / "benchmarks" / "gradient_snr.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_summary_by_hand(snr):
    # three gradients: e1, e1 + e2, e2 -> cosines 1/sqrt2, 0, 1/sqrt2; mean pairwise cos = sqrt2/3
    g = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    out = snr.summarize(g, batch=4)
    c = math.sqrt(2) / 3
    assert out["pairwise_cos"] == round(c, 4)
    r = c / (4 * (1 - c))                                # E[cos] = B r / (1 + B r) solved for r
    assert out["per_sample_snr"] == pytest.approx(r)
    assert out["samples_for_cos_0.5"] == pytest.approx(1 / r)
    orthogonal = snr.summarize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), batch=8)
    assert orthogonal["per_sample_snr"] == 0.0 and orthogonal["samples_for_cos_0.5"] is None


def test_the_instrument_sees_the_toy_worlds_signal(snr, tmp_path):
    # the toy world learns 0.14 -> 0.96 in 120 steps: its batch gradients agree well above zero (measured
    # 0.17 at batch 64; the shapes demo's: -0.002 +- 0.004). Batch 0 again gives the same gradient: the
    # intercepted optimizer step changed no weight.
    g, batch = snr.gradients("pkg://mmgrpo.configs/toy/tokens.yaml", ("grad_accum=2",), 6, str(tmp_path))
    assert g.shape[0] == 6 and batch == 64 and torch.isfinite(g).all()
    assert snr.summarize(g, batch)["pairwise_cos"] > 0.08
    again, _ = snr.gradients("pkg://mmgrpo.configs/toy/tokens.yaml", ("grad_accum=2",), 1, str(tmp_path / "b"))
    assert torch.allclose(again[0], g[0], atol=1e-6)


def test_recipes_with_several_updates_per_batch_are_refused(snr, tmp_path):
    with pytest.raises(SystemExit, match="one optimizer step per batch"):
        snr.gradients("pkg://mmgrpo.configs/toy/tokens.yaml", (), 2, str(tmp_path))
