"""Real checkpoints (slow): each reward loads its published weights when they are on this machine.

Hub checkpoints are looked up in the local Hugging Face cache only (never downloaded here); weight files
that are not on the hub come from environment variables. Each test skips with the command that would make
it run. Run with `pytest -m slow tests/rewards_image`.
"""

from __future__ import annotations

import os

import pytest
import torch

pytestmark = pytest.mark.slow

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def cached_repo(repo_id: str) -> str:
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(repo_id, local_files_only=True)
    except Exception:  # noqa: BLE001 - any failure means "not cached"
        pytest.skip(f"{repo_id} is not in the local Hugging Face cache; run `hf download {repo_id}` first")


def cached_file(repo_id: str, filename: str, env: str) -> str:
    if os.environ.get(env) and os.path.isfile(os.environ[env]):
        return os.environ[env]
    try:
        from huggingface_hub import hf_hub_download

        return hf_hub_download(repo_id, filename, local_files_only=True)
    except Exception:  # noqa: BLE001
        pytest.skip(f"{filename} not found: set {env}=/path/to/{filename} or run `hf download {repo_id} {filename}`")


def color_square(rgb, size=224):
    img = torch.full((3, size, size), 0.9)
    img[:, size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = torch.tensor(rgb).view(3, 1, 1)
    return img


def color_pair():
    images = torch.stack([color_square((0.9, 0.05, 0.05)), color_square((0.05, 0.7, 0.1))])  # red, green
    return images


def assert_prefers_matching_color(reward):
    images = color_pair()
    match = reward(images, ["a red square", "a green square"])
    swapped = reward(images, ["a green square", "a red square"])
    assert (match > swapped).all(), (match, swapped)
    return match


def test_pickscore_real():
    from mmgrpo.rewards.image.pickscore import PickScoreReward

    cfg = PickScoreReward.Config(checkpoint=cached_repo("yuvalkirstain/PickScore_v1"),
                                 processor=cached_repo("laion/CLIP-ViT-H-14-laion2B-s32B-b79K"))
    scores = assert_prefers_matching_color(PickScoreReward(cfg, device=DEVICE))
    assert ((scores > 10) & (scores < 30)).all()


def test_clip_score_real():
    from mmgrpo.rewards.image.clip_score import CLIPScoreReward

    reward = CLIPScoreReward(CLIPScoreReward.Config(checkpoint=cached_repo("openai/clip-vit-large-patch14")), device=DEVICE)
    scores = assert_prefers_matching_color(reward)
    assert ((scores > 0.2) & (scores < 1.0)).all()  # 2.5 * cos with cos ~0.2-0.35


def test_hpsv2_real():
    from mmgrpo.rewards.image.hps import HPSv2Reward

    weights = cached_file("xswu/HPSv2", "HPS_v2.1_compressed.pt", "MMGRPO_HPS_WEIGHTS")
    scores = assert_prefers_matching_color(HPSv2Reward(HPSv2Reward.Config(weights=weights, hub_repo=None), device=DEVICE))
    assert ((scores > 0.1) & (scores < 0.45)).all()


def test_aesthetic_real():
    from mmgrpo.rewards.image.aesthetic import LaionAestheticReward

    clip = cached_repo("openai/clip-vit-large-patch14")
    head = os.environ.get("MMGRPO_AESTHETIC_HEAD", "")
    if not os.path.isfile(head):
        pytest.skip("set MMGRPO_AESTHETIC_HEAD=/path/to/sac+logos+ava1-l14-linearMSE.pth (improved-aesthetic-predictor)")
    reward = LaionAestheticReward(LaionAestheticReward.Config(head_weights=head, clip_checkpoint=clip), device=DEVICE)
    scores = reward(color_pair(), ["", ""])
    assert ((scores > 1) & (scores < 9)).all()


def test_geneval_owlv2_real():
    from mmgrpo.rewards.image.geneval import GenEvalReward

    reward = GenEvalReward(GenEvalReward.Config(checkpoint=cached_repo("google/owlv2-base-patch16-ensemble")), device=DEVICE)
    blank = torch.full((2, 3, 480, 480), 0.5)
    # A flat gray image holds no dog: the presence check fails; "no cake" holds.
    out = reward(blank, ["a photo of a dog", "a photo of a cake"],
                 metadata=[None, {"tag": "single_object", "include": [], "exclude": [{"class": "cake", "count": 1}]}])
    torch.testing.assert_close(out, torch.tensor([0.0, 1.0]))


def test_video_clip_rewards_real():
    from mmgrpo.rewards.video.clip_video import TemporalConsistencyReward, TextVideoAlignmentReward

    clip = cached_repo("openai/clip-vit-large-patch14")
    static = color_pair()[:, None].expand(-1, 4, -1, -1, -1)  # [2, 4, 3, 224, 224]
    noise = torch.rand(1, 4, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    temporal = TemporalConsistencyReward(TemporalConsistencyReward.Config(checkpoint=clip), device=DEVICE)
    torch.testing.assert_close(temporal(static, ["", ""]), torch.ones(2), atol=1e-4, rtol=0)
    assert temporal(noise, [""]).item() < 0.999
    align = TextVideoAlignmentReward(TextVideoAlignmentReward.Config(checkpoint=clip), device=DEVICE)
    assert (align(static, ["a red square", "a green square"]) > align(static, ["a green square", "a red square"])).all()


def test_vlm_judge_real_endpoint():
    from mmgrpo.rewards.image.vlm_judge import VLMJudgeReward

    url = os.environ.get("MMGRPO_VLM_JUDGE_URL")
    if not url:
        pytest.skip("set MMGRPO_VLM_JUDGE_URL=http://host:port/v1/chat/completions and MMGRPO_VLM_JUDGE_MODEL")
    reward = VLMJudgeReward(VLMJudgeReward.Config(url=url, model=os.environ.get("MMGRPO_VLM_JUDGE_MODEL", "default")))
    scores = reward(color_pair(), ["a red square", "a green square"])
    assert torch.isfinite(scores).all() and ((scores >= 0) & (scores <= 1)).all()
