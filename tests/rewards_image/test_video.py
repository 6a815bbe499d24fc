"""Video rewards: per-frame image rewards, CLIP temporal consistency and text-video alignment."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import PROMPTS, assert_reward_contract

from mmgrpo.rewards.image.clip_score import CLIPScoreReward
from mmgrpo.rewards.image.jpeg import JpegIncompressibility
from mmgrpo.rewards.video.clip_video import (
    TemporalConsistencyReward,
    TextVideoAlignmentReward,
    consecutive_similarity,
    mean_frame_alignment,
)
from mmgrpo.rewards.video.frames import frame_indices, to_video_batch
from mmgrpo.rewards.video.per_frame import PerFrameReward, aggregate_frames

JPEG = {"_component_": "mmgrpo.rewards.image.jpeg:JpegIncompressibility"}


def random_videos(n, f=4, seed=0, h=24, w=32):
    return torch.rand(n, f, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_frame_indices_hand_computed():
    assert frame_indices(10).tolist() == list(range(10))
    assert frame_indices(10, stride=2).tolist() == [0, 2, 4, 6, 8]
    # 5 strided frames, 3 kept evenly: positions linspace(0, 4, 3) = 0, 2, 4 -> frames 0, 4, 8.
    assert frame_indices(10, stride=2, max_frames=3).tolist() == [0, 4, 8]
    assert frame_indices(3, max_frames=8).tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="frame_stride"):
        frame_indices(4, stride=0)


def test_aggregate_frames_hand_computed():
    nan = float("nan")
    s = torch.tensor([[1.0, 2.0, nan], [nan, nan, nan], [3.0, -1.0, 5.0]])
    # mean over finite: 1.5, NaN (nothing finite), 7/3; min over finite: 1, NaN, -1.
    torch.testing.assert_close(aggregate_frames(s, "mean"), torch.tensor([1.5, nan, 7 / 3]), equal_nan=True)
    torch.testing.assert_close(aggregate_frames(s, "min"), torch.tensor([1.0, nan, -1.0]), equal_nan=True)


def test_per_frame_equals_loop_over_frames():
    videos = random_videos(3, f=5)
    videos[1, 2] = 0.5  # one flat frame: it compresses well, so it is that video's minimum
    conds = PROMPTS[:3]
    jpeg = JpegIncompressibility()
    ref = torch.stack([torch.stack([jpeg(videos[i, t : t + 1], [conds[i]])[0] for t in range(5)]) for i in range(3)])
    mean = PerFrameReward(PerFrameReward.Config(image_reward=JPEG))
    torch.testing.assert_close(assert_reward_contract(mean, videos, conds), ref.mean(1))
    low = PerFrameReward(PerFrameReward.Config(image_reward=JPEG, aggregate="min"))
    torch.testing.assert_close(low(videos, conds), ref.min(1).values)
    assert low(videos, conds)[1] == ref[1, 2]
    strided = PerFrameReward(PerFrameReward.Config(image_reward=JPEG, frame_stride=2))  # frames 0, 2, 4
    torch.testing.assert_close(strided(videos, conds), ref[:, [0, 2, 4]].mean(1))
    assert mean.name == "video_per_frame[jpeg_incompressibility]"


def test_per_frame_repeats_prompts_and_metadata_per_frame(owlv2_dir):
    spec = {"_component_": "mmgrpo.rewards.image.geneval:GenEvalReward", "checkpoint": owlv2_dir, "mode": "partial"}
    reward = PerFrameReward(PerFrameReward.Config(image_reward=spec))
    videos = random_videos(2, f=3, h=32, w=32)
    meta = [None, {"tag": "single_object", "include": [], "exclude": [{"class": "cat", "count": 1}]}]
    out = assert_reward_contract(reward, videos, ["a photo of a dog", "an astronaut riding a horse"], metadata=meta)
    inner = reward.image_reward
    per_frame = inner(videos[1], ["an astronaut riding a horse"] * 3, metadata=[meta[1]] * 3)
    assert out[1].item() == pytest.approx(per_frame.mean().item())  # metadata, not the (unparseable) prompt, was used
    assert torch.isfinite(out).all()


def test_per_frame_rejects_groupwise_and_bad_input():
    class Ranked:
        name, groupwise = "ranked", True

        def __call__(self, outputs, conds, **kw):
            return torch.zeros(len(conds))

    with pytest.raises(ValueError, match="groupwise"):
        PerFrameReward(PerFrameReward.Config(), image_reward=Ranked())
    reward = PerFrameReward(PerFrameReward.Config(image_reward=JPEG))
    with pytest.raises(ValueError, match=r"\[N,F,3,H,W\]"):
        reward(torch.rand(2, 3, 8, 8), ["a", "b"])
    with pytest.raises(ValueError, match="2 videos but 1 conds"):
        reward(random_videos(2), ["a"])
    uint8 = (random_videos(1) * 255).round().to(torch.uint8)
    torch.testing.assert_close(reward(uint8, ["a"]), reward(uint8.float() / 255, ["a"]))
    assert to_video_batch([uint8[0], uint8[0]]).shape == (2, 4, 3, 24, 32)


def test_consecutive_similarity_and_alignment_hand_computed():
    e1, e2 = torch.eye(2)
    # frames e1, e1, e2: cos = [1, 0] -> 0.5; a single frame has no consecutive pair -> NaN.
    torch.testing.assert_close(consecutive_similarity(torch.stack([e1, e1, e2])[None]), torch.tensor([0.5]))
    assert torch.isnan(consecutive_similarity(e1[None, None])).all()
    frames = torch.stack([e1, e2])[None]  # mean (0.5, 0.5) -> unit (0.7071, 0.7071)
    # against e1: cos = 0.7071; against (e1 + e2)/sqrt(2): cos = 1.
    torch.testing.assert_close(mean_frame_alignment(frames, e1[None]), torch.tensor([1 / math.sqrt(2)]))
    torch.testing.assert_close(mean_frame_alignment(frames, (e1 + e2)[None]), torch.tensor([1.0]))


def test_temporal_consistency_on_tiny_clip(clip_dir):
    reward = TemporalConsistencyReward(TemporalConsistencyReward.Config(checkpoint=clip_dir, batch_size=5))
    videos = random_videos(3, f=4, seed=1)
    out = assert_reward_contract(reward, videos, PROMPTS[:3])
    assert (out < 1 - 1e-4).all() and (out >= -1).all()
    static = videos[:, :1].expand(-1, 4, -1, -1, -1)  # every frame identical -> cosine 1
    torch.testing.assert_close(reward(static, PROMPTS[:3]), torch.ones(3), atol=1e-5, rtol=0)
    single = TemporalConsistencyReward(TemporalConsistencyReward.Config(checkpoint=clip_dir, max_frames=1))
    assert torch.isnan(single(videos, PROMPTS[:3])).all()  # one frame: not applicable


def test_text_video_alignment_on_tiny_clip(clip_dir):
    reward = TextVideoAlignmentReward(TextVideoAlignmentReward.Config(checkpoint=clip_dir, batch_size=5, scale=2.0))
    videos = random_videos(4, f=3, seed=2)
    assert_reward_contract(reward, videos, PROMPTS[:4])
    # A video of one repeated frame is aligned exactly as that image: 2 * the raw CLIP cosine.
    image = videos[:, 0]
    repeated = image[:, None].expand(-1, 3, -1, -1, -1)
    cos = CLIPScoreReward(CLIPScoreReward.Config(checkpoint=clip_dir, scale=1.0, clip_negative=False))(image, PROMPTS[:4])
    torch.testing.assert_close(reward(repeated, PROMPTS[:4]), 2.0 * cos, atol=1e-5, rtol=0)
