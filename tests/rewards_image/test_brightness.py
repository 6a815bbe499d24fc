"""Darkness / brightness: hand-computed means, the registry names, bad input."""

import pytest
import torch

from mmgrpo.rewards.image.brightness import Brightness, Darkness


def test_hand_computed_means():
    white = torch.ones(1, 3, 2, 2)
    black = torch.zeros(1, 3, 2, 2)
    half = torch.zeros(1, 3, 2, 2)
    half[:, :, 0, :] = 1.0                     # top row white: 6 of 12 values are 1
    quarter = torch.zeros(1, 3, 2, 2)
    quarter[:, 0, 0, 0] = 1.0                  # one value of 12
    imgs = torch.cat([white, black, half, quarter])
    conds = ["p"] * 4
    assert torch.allclose(Brightness()(imgs, conds), torch.tensor([1.0, 0.0, 0.5, 1 / 12]))
    assert torch.allclose(Darkness()(imgs, conds), torch.tensor([0.0, 1.0, 0.5, 11 / 12]))


def test_out_of_range_pixels_are_clamped_and_count_checked():
    imgs = torch.full((2, 3, 2, 2), 2.0)
    assert torch.allclose(Darkness()(imgs, ["a", "b"]), torch.zeros(2))
    with pytest.raises(ValueError):
        Darkness()(imgs, ["a"])


def test_registered():
    from mmgrpo.components import REWARDS

    assert REWARDS.get("darkness") is Darkness and REWARDS.get("brightness") is Brightness
