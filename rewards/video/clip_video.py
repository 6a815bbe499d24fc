"""CLIP video rewards: temporal consistency (similarity of consecutive frames) and text-video alignment
(the prompt against the frame-averaged image feature).

Temporal consistency follows the CLIP frame-consistency metric of text-to-video evaluation (e.g. the
"CLIP-Temp" / frame consistency score of Esser et al., "Structure and Content-Guided Video Synthesis", 2023):
the mean cosine similarity of CLIP image features of consecutive frames. Text-video alignment averages the
unit frame features, renormalizes, and takes the cosine with the prompt's text feature (CLIPSIM-style).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from mmgrpo.rewards.image.clip_backbone import CLIPFeatures
from mmgrpo.rewards.image.inputs import prompts_of, resolve_device

from .frames import frame_indices, to_video_batch


def consecutive_similarity(feats: Tensor) -> Tensor:
    """Unit frame features `[N, F, D]` -> mean over t of cos(f_t, f_{t+1}) `[N]`; NaN when F < 2."""
    if feats.shape[1] < 2:
        return torch.full((feats.shape[0],), float("nan"))
    return (feats[:, :-1] * feats[:, 1:]).sum(-1).mean(-1)  # [N, F-1] -> [N]


def mean_frame_alignment(frame_feats: Tensor, text_feats: Tensor) -> Tensor:
    """cos(normalize(mean_t f_t), text): frame features `[N, F, D]`, text `[N, D]` -> `[N]`."""
    video = torch.nn.functional.normalize(frame_feats.mean(1), dim=-1)  # [N, D]
    text = torch.nn.functional.normalize(text_feats, dim=-1)
    return (video * text).sum(-1)


class _CLIPVideoReward:
    """Shared loading and frame-feature extraction for the CLIP video rewards."""

    name = "clip_video"
    reads_media = ()  # videos travel as tensors, never as decoded images/audio (payload.media_reads)

    def __init__(self, cfg: Any, device: Any = None):
        self.cfg = cfg
        frame_indices(1, cfg.frame_stride, cfg.max_frames)
        self.clip = CLIPFeatures(cfg.checkpoint, cfg.processor, resolve_device(cfg.device, device), cfg.dtype,
                                 cfg.batch_size, self.name)

    def frame_features(self, outputs: Any, conds: list) -> Tensor:
        videos = to_video_batch(outputs)  # [N, F, 3, H, W]
        if videos.shape[0] != len(conds):
            raise ValueError(f"reward {self.name!r}: got {videos.shape[0]} videos but {len(conds)} conds")
        idx = frame_indices(videos.shape[1], self.cfg.frame_stride, self.cfg.max_frames)
        n, f = videos.shape[0], idx.numel()
        feats = self.clip.image_features(videos[:, idx].flatten(0, 1))  # [N*F', D] unit
        return feats.reshape(n, f, -1)  # [N, F', D]


class TemporalConsistencyReward(_CLIPVideoReward):
    """Mean CLIP cosine similarity of consecutive frames, in [-1, 1] (1 = static video): `[N]` float32."""

    name = "video_temporal_consistency"

    @dataclass
    class Config:
        checkpoint: str = "openai/clip-vit-large-patch14"  # a transformers CLIPModel: hub id or local dir
        processor: str | None = None  # processor source; null = the checkpoint's own
        device: str | None = None  # device for this reward; null = the trainer's device
        dtype: Literal["float32", "float16", "bfloat16"] = "float32"  # model weights dtype (features in fp32)
        batch_size: int = 32  # frames per forward pass
        frame_stride: int = 1  # compare every k-th frame with the next sampled one
        max_frames: int | None = None  # at most this many frames, evenly spaced; null = all

    def __init__(self, cfg: Config | None = None, device: Any = None):
        super().__init__(cfg or self.Config(), device)

    def __call__(self, outputs: Any, conds: list, **metadata: Any) -> Tensor:
        return consecutive_similarity(self.frame_features(outputs, conds)).float()


class TextVideoAlignmentReward(_CLIPVideoReward):
    """scale * cos(frame-averaged CLIP image feature, prompt feature): `[N]` float32."""

    name = "video_text_alignment"

    @dataclass
    class Config:
        checkpoint: str = "openai/clip-vit-large-patch14"  # a transformers CLIPModel: hub id or local dir
        processor: str | None = None  # processor source; null = the checkpoint's own
        device: str | None = None  # device for this reward; null = the trainer's device
        dtype: Literal["float32", "float16", "bfloat16"] = "float32"  # model weights dtype (features in fp32)
        batch_size: int = 32  # frames per forward pass
        frame_stride: int = 1  # use every k-th frame
        max_frames: int | None = 16  # at most this many frames, evenly spaced; null = all
        scale: float = 1.0  # multiplies the cosine (CLIPSIM reports 100 x cos); not the trainer's reward weight

    def __init__(self, cfg: Config | None = None, device: Any = None):
        super().__init__(cfg or self.Config(), device)

    def __call__(self, outputs: Any, conds: list, **metadata: Any) -> Tensor:
        frames = self.frame_features(outputs, conds)  # [N, F', D]
        text = self.clip.text_features(prompts_of(conds))  # [N, D]
        return (self.cfg.scale * mean_frame_alignment(frames, text)).float()
