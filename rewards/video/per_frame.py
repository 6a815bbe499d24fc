"""Any image reward applied to each frame of a video, aggregated over frames (mean or min).

Frames of all videos are scored in one call of the image reward, as `N*F` images with each prompt and
each per-sample metadata entry repeated per frame. NaN frame scores are left out of the aggregate; a
video with no finite frame score is NaN.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from .frames import frame_indices, repeat_per_frame, to_video_batch


def aggregate_frames(scores: Tensor, how: str) -> Tensor:
    """`[N, F]` frame scores -> `[N]`: mean or min over the finite entries; NaN when none is finite."""
    finite = torch.isfinite(scores)
    if how == "mean":
        total = torch.where(finite, scores, 0.0).sum(-1)
        out = total / finite.sum(-1).clamp_min(1)
    elif how == "min":
        out = torch.where(finite, scores, float("inf")).min(-1).values
    else:
        raise ValueError(f"aggregate must be 'mean' or 'min', got {how!r}")
    return torch.where(finite.any(-1), out, float("nan")).float()


class PerFrameReward:
    """Video reward from an image reward: score every (sampled) frame, then mean or min over frames."""

    name = "video_per_frame"
    reads_media = ()  # videos travel as tensors, never as decoded images/audio (payload.media_reads)

    @dataclass
    class Config:
        image_reward: dict = field(default_factory=lambda: {"name": "jpeg_incompressibility"})  # the image reward spec: {name: ..., **params} or {_component_: ...}
        aggregate: Literal["mean", "min"] = "mean"  # how frame scores become one video score
        frame_stride: int = 1  # score every k-th frame
        max_frames: int | None = None  # then at most this many of them, evenly spaced; null = all

        def __post_init__(self) -> None:
            frame_indices(1, self.frame_stride, self.max_frames)  # validates both

    def __init__(self, cfg: Config | None = None, device: Any = None, image_reward: Any = None):
        self.cfg = cfg or self.Config()
        if image_reward is None:
            from mmgrpo.components import REWARDS, build

            image_reward = build(REWARDS, dict(self.cfg.image_reward), f"{self.name}.image_reward", device=device)
        if getattr(image_reward, "groupwise", False):
            raise ValueError(f"reward {self.name!r}: image_reward {getattr(image_reward, 'name', image_reward)!r} is "
                             "groupwise; per-frame scoring needs a pointwise image reward")
        self.image_reward = image_reward
        self.name = f"{self.name}[{getattr(image_reward, 'name', type(image_reward).__name__)}]"

    def __call__(self, outputs: Any, conds: list, **metadata: Any) -> Tensor:
        videos = to_video_batch(outputs)  # [N, F, 3, H, W]
        n = videos.shape[0]
        if n != len(conds):
            raise ValueError(f"reward {self.name!r}: got {n} videos but {len(conds)} conds")
        idx = frame_indices(videos.shape[1], self.cfg.frame_stride, self.cfg.max_frames)  # [F']
        f = idx.numel()
        frames = videos[:, idx].flatten(0, 1)  # [N*F', 3, H, W], sample-major
        frame_conds = [c for c in conds for _ in range(f)]
        meta = {k: repeat_per_frame(v, n, f) for k, v in metadata.items()}
        scores = self.image_reward(frames, frame_conds, **meta)
        scores = torch.as_tensor(scores, dtype=torch.float32).reshape(n, f)  # [N, F']
        return aggregate_frames(scores, self.cfg.aggregate)
