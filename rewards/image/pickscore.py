"""PickScore: human preference for a text-to-image pair, from a CLIP-H model trained on Pick-a-Pic.

Kirstain et al., "Pick-a-Pic: An Open Dataset of User Preferences for Text-to-Image Generation" (2023).
score = exp(logit_scale) * cos(text_features, image_features), typically ~17-24 for SD-class images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from torch import Tensor

from .clip_backbone import CLIPFeatures
from .inputs import check_count, prompts_of, resolve_device, to_image_batch


class PickScoreReward:
    """PickScore of each (image, prompt) pair: `[N]` float32."""

    name = "pickscore"
    reads_media = ("outputs:images",)  # decoded media it reads (reward server, payload.media_reads)

    @dataclass
    class Config:
        checkpoint: str = "yuvalkirstain/PickScore_v1"  # the PickScore CLIPModel: hub id or local save_pretrained dir
        processor: str = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"  # its processor (tokenizer + image preprocessing): hub id or local dir
        device: str | None = None  # device for this reward; null = the trainer's device
        dtype: Literal["float32", "float16", "bfloat16"] = "float32"  # model weights dtype (scores are computed in fp32)
        batch_size: int = 16  # images per forward pass
        divide_by: float = 1.0  # report score / divide_by (Flow-GRPO uses 26 to bring PickScore near [0, 1])

        def __post_init__(self) -> None:
            if self.divide_by <= 0:
                raise ValueError(f"divide_by must be > 0, got {self.divide_by}")

    def __init__(self, cfg: Config | None = None, device: Any = None):
        self.cfg = cfg or self.Config()
        self.clip = CLIPFeatures(self.cfg.checkpoint, self.cfg.processor, resolve_device(self.cfg.device, device),
                                 self.cfg.dtype, self.cfg.batch_size, self.name)

    def __call__(self, outputs: Any, conds: list, **metadata: Any) -> Tensor:
        images = to_image_batch(outputs)  # [N,3,H,W] in [0,1]
        check_count(images.shape[0], conds, self.name)
        img = self.clip.image_features(images)  # [N, D] unit norm
        txt = self.clip.text_features(prompts_of(conds))  # [N, D] unit norm
        return (self.clip.logit_scale * (img * txt).sum(-1) / self.cfg.divide_by).float()  # [N]
