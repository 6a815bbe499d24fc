"""Darkness and brightness: one minus the image's mean pixel value, or the mean itself (no weights).

A reward with one consistent direction for every prompt and every sample: the positive control of the
gradient-signal benchmarks (`benchmarks/gradient_snr.py`, `benchmarks/flow_objectives.py`). If a recipe cannot
learn darkness, it cannot learn anything; if it learns darkness but not the task's reward, the task's reward is
where the signal is missing. The prompt is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from .inputs import check_count, to_image_batch


def mean_pixel(images: Tensor) -> Tensor:
    """float `[N,3,H,W]` in [0,1] -> the mean over channels and pixels `[N]` float32."""
    return images.float().clamp(0, 1).mean(dim=(1, 2, 3))


class Brightness:
    """The mean pixel value in [0, 1]: 1 for a white image, 0 for a black one."""

    name = "brightness"
    reads_media = ("outputs:images",)  # decoded media it reads (reward server, payload.media_reads)

    @dataclass
    class Config:
        pass

    def __init__(self, cfg: Config | None = None):
        self.cfg = cfg or self.Config()

    def score(self, images: Tensor) -> Tensor:
        return mean_pixel(images)

    def __call__(self, outputs: Any, conds: list, **metadata: Any) -> Tensor:
        images = to_image_batch(outputs)  # [N,3,H,W] in [0,1]
        check_count(images.shape[0], conds, self.name)
        return self.score(images)


class Darkness(Brightness):
    """`1 - mean pixel value`: 1 for a black image, 0 for a white one."""

    name = "darkness"

    def score(self, images: Tensor) -> Tensor:
        return 1.0 - mean_pixel(images)
