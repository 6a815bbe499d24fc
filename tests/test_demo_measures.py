"""The demo's measurements by hand: the paired gain and its interval, sample diversity, the labelled grid."""


import pytest
import torch

from mmgrpo.pipelines.demo import diversity, labelled_grid, paired_gain
from mmgrpo.rewards.image.shapes import Verdict


def test_paired_gain_by_hand():
    # differences 1, 0, 1, 0: mean 0.5, sample sd sqrt(4 * 0.25 / 3) = 0.5774, half-width 1.96 * 0.5774 / 2 = 0.5658
    g = paired_gain([0, 1, 0, 0], [1, 1, 1, 0])
    assert g["gain"] == 0.5 and g["n"] == 4
    assert g["ci95"] == pytest.approx([0.5 - 0.56580, 0.5 + 0.56580], abs=1e-4)
    assert paired_gain([0.5, 0.5], [0.5, 0.5])["ci95"] == [0.0, 0.0]
    with pytest.raises(ValueError, match="equally many"):
        paired_gain([1.0], [1.0, 0.0])


def test_diversity_by_hand():
    # prompt a: images all 0 and all 1 (1 pixel, 3 channels): RMS distance 1; prompt b: two equal images: 0
    imgs = torch.stack([torch.zeros(3, 1, 1), torch.ones(3, 1, 1), torch.full((3, 1, 1), 0.5),
                        torch.full((3, 1, 1), 0.5)])
    assert diversity(imgs, ["a", "a", "b", "b"]) == pytest.approx(0.5)
    # three images 0, 0.5, 1: pairwise distances 0.5, 1, 0.5 -> mean 2/3
    three = torch.stack([torch.full((3, 2, 2), v) for v in (0.0, 0.5, 1.0)])
    assert diversity(three, ["c"] * 3) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="two or more"):
        diversity(imgs[:2], ["a", "b"])


def test_labelled_grid_is_large_and_has_a_cell_per_prompt(tmp_path):
    from PIL import Image

    ok = Verdict(1.0, 1.0, True, True, True, None)
    bad = Verdict(0.0, 0.5, False, True, True, None)
    imgs = torch.rand(5, 3, 32, 32)
    out = labelled_grid(imgs, imgs.flip(0), ["a red circle"] * 5, [ok] * 5, [bad] * 5, tmp_path / "g.png", ncols=4)
    img = Image.open(out)
    # 4 columns of two 160 px images (5x the 32 px samples, + gaps), 2 rows of them with their labels
    assert img.width >= 4 * 2 * 160 and img.height >= 2 * 160
