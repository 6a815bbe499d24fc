"""Videos made uniform for rewards: float `[N,F,3,H,W]` in [0,1], and which frames get scored."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def to_video_batch(outputs: Any, where: str = "outputs") -> Tensor:
    """Videos -> float32 `[N,F,3,H,W]` in [0,1]: a float tensor (clamped), a uint8 tensor (/255), or a list of
    `[F,3,H,W]` tensors of one shape."""
    if isinstance(outputs, (list, tuple)) and outputs and all(isinstance(v, Tensor) for v in outputs):
        shapes = {tuple(v.shape) for v in outputs}
        if len(shapes) > 1:
            raise ValueError(f"{where}: videos have different shapes {sorted(shapes)}; pad or resample them to one")
        outputs = torch.stack(list(outputs))
    if not isinstance(outputs, Tensor):
        raise TypeError(f"{where}: expected a video tensor [N,F,3,H,W] or a list of [F,3,H,W], got {type(outputs).__name__}")
    if outputs.ndim != 5 or outputs.shape[2] != 3:
        raise ValueError(f"{where}: expected videos of shape [N,F,3,H,W], got {list(outputs.shape)}")
    if outputs.dtype == torch.uint8:
        return outputs.float() / 255.0
    return outputs.float().clamp(0.0, 1.0)


def frame_indices(num_frames: int, stride: int = 1, max_frames: int | None = None) -> Tensor:
    """Every `stride`-th frame, then at most `max_frames` of those, evenly spaced (first and last kept).

    e.g. 10 frames, stride 2 -> [0, 2, 4, 6, 8]; with max_frames 3 -> [0, 4, 8].
    """
    if stride < 1 or (max_frames is not None and max_frames < 1):
        raise ValueError(f"frame_stride must be >= 1 and max_frames >= 1 or null, got {stride}, {max_frames}")
    idx = torch.arange(0, num_frames, stride)
    if max_frames is not None and idx.numel() > max_frames:
        pick = torch.linspace(0, idx.numel() - 1, max_frames).round().long()
        idx = idx[pick]
    return idx


def repeat_per_frame(value: Any, n: int, frames: int) -> Any:
    """Per-sample metadata (list/tuple/tensor of length n) repeated for each of `frames` frames; else as is."""
    if isinstance(value, Tensor) and value.ndim >= 1 and value.shape[0] == n:
        return value.repeat_interleave(frames, dim=0)
    if isinstance(value, (list, tuple)) and len(value) == n:
        return [v for v in value for _ in range(frames)]
    return value
