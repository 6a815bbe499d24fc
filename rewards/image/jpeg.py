"""JPEG compressibility and incompressibility: the image's JPEG size in kB, negated or not (DDPO).

Black et al., "Training Diffusion Models with Reinforcement Learning" (DDPO, 2023): images are rounded to
uint8, saved as JPEG at quality 95, and the reward is -size (compressibility) or +size (incompressibility)
in kB (bytes / 1000). No weights; the prompt is ignored.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .inputs import check_count, to_image_batch, to_uint8_hwc


def jpeg_size_kb(images: Tensor, quality: int = 95) -> Tensor:
    """float `[N,3,H,W]` in [0,1] -> JPEG size in kB `[N]` float32 (one PIL encode per image)."""
    from PIL import Image

    sizes = []
    for arr in to_uint8_hwc(images).numpy():  # [H, W, 3] uint8
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
        sizes.append(buf.tell() / 1000.0)
    return torch.tensor(sizes, dtype=torch.float32)


class JpegIncompressibility:
    """+JPEG size in kB: rewards detail and texture."""

    name = "jpeg_incompressibility"
    reads_media = ("outputs:images",)  # decoded media it reads (reward server, payload.media_reads)
    sign = 1.0

    @dataclass
    class Config:
        quality: int = 95  # JPEG quality used for the size measurement (DDPO: 95)

        def __post_init__(self) -> None:
            if not 1 <= self.quality <= 95:
                raise ValueError(f"quality must be in [1, 95] (PIL's useful range), got {self.quality}")

    def __init__(self, cfg: Config | None = None):
        self.cfg = cfg or self.Config()

    def __call__(self, outputs: Any, conds: list, **metadata: Any) -> Tensor:
        images = to_image_batch(outputs)  # [N,3,H,W] in [0,1]
        check_count(images.shape[0], conds, self.name)
        return self.sign * jpeg_size_kb(images, self.cfg.quality)


class JpegCompressibility(JpegIncompressibility):
    """-JPEG size in kB: rewards flat, simple images."""

    name = "jpeg_compressibility"
    sign = -1.0
