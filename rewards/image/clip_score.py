"""CLIP score: text-image alignment as the (clipped, scaled) cosine of CLIP image and text features.

Hessel et al., "CLIPScore: A Reference-free Evaluation Metric for Image Captioning" (2021):
score = w * max(cos(image, text), 0) with w = 2.5; torchmetrics reports the same with w = 100.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from torch import Tensor

from .clip_backbone import CLIPFeatures
from .inputs import check_count, prompts_of, resolve_device, to_image_batch


class CLIPScoreReward:
    """`scale * max(cos, 0)` (or the raw cosine) of each (image, prompt) pair: `[N]` float32."""

    name = "clip_score"
    reads_media = ("outputs:images",)  # decoded media it reads (reward server, payload.media_reads)

    @dataclass
    class Config:
        checkpoint: str = "openai/clip-vit-large-patch14"  # a transformers CLIPModel: hub id or local save_pretrained dir
        processor: str | None = None  # processor source; null = the checkpoint's own
        device: str | None = None  # device for this reward; null = the trainer's device
        dtype: Literal["float32", "float16", "bfloat16"] = "float32"  # model weights dtype (scores are computed in fp32)
        batch_size: int = 16  # images per forward pass
        scale: float = 2.5  # w in w * max(cos, 0) (Hessel et al.: 2.5; torchmetrics: 100); not the trainer's reward weight
        clip_negative: bool = True  # clamp negative cosines to 0 as CLIPScore does; false = raw w * cos

    def __init__(self, cfg: Config | None = None, device: Any = None):
        self.cfg = cfg or self.Config()
        self.clip = CLIPFeatures(self.cfg.checkpoint, self.cfg.processor, resolve_device(self.cfg.device, device),
                                 self.cfg.dtype, self.cfg.batch_size, self.name)

    def __call__(self, outputs: Any, conds: list, **metadata: Any) -> Tensor:
        images = to_image_batch(outputs)  # [N,3,H,W] in [0,1]
        check_count(images.shape[0], conds, self.name)
        cos = (self.clip.image_features(images) * self.clip.text_features(prompts_of(conds))).sum(-1)  # [N]
        if self.cfg.clip_negative:
            cos = cos.clamp_min(0.0)
        return (self.cfg.scale * cos).float()
