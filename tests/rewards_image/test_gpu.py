"""On a CUDA device the rewards give the CPU's scores (tiny models; skipped without a GPU)."""

from __future__ import annotations

import pytest
import torch
from conftest import PROMPTS, random_images

from mmgrpo.rewards.image.clip_score import CLIPScoreReward
from mmgrpo.rewards.image.geneval import GenEvalReward
from mmgrpo.rewards.image.pickscore import PickScoreReward

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_clip_rewards_cuda_match_cpu(clip_dir):
    images = random_images(8)
    for cls, cfg in ((PickScoreReward, dict(checkpoint=clip_dir, processor=clip_dir)),
                     (CLIPScoreReward, dict(checkpoint=clip_dir))):
        cpu = cls(cls.Config(**cfg), device="cpu")(images, PROMPTS)
        gpu = cls(cls.Config(**cfg), device="cuda")(images.cuda(), PROMPTS)
        assert gpu.device.type == "cpu" and gpu.dtype == torch.float32
        torch.testing.assert_close(gpu, cpu, atol=1e-3, rtol=1e-3)


def test_geneval_cuda_matches_cpu(owlv2_dir):
    images = random_images(4, h=32, w=32)
    prompts = ["a photo of a dog", "a photo of two cats", "a photo of a red car", "a photo of a cup left of a bowl"]
    cfg = GenEvalReward.Config(checkpoint=owlv2_dir, mode="partial")
    torch.testing.assert_close(GenEvalReward(cfg, device="cuda")(images, prompts),
                               GenEvalReward(cfg, device="cpu")(images, prompts))
