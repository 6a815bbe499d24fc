"""Saving sample outputs for people to look at: image grids (PNG), videos (GIF), audio (WAV), text (JSONL)."""

from __future__ import annotations

import json
import math
import wave
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    return (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def image_grid(images: torch.Tensor, ncols: int | None = None, pad: int = 2) -> Image.Image:
    """[N,3,H,W] floats in [0,1] -> one PIL grid image."""
    n, _, h, w = images.shape
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    arr = _to_uint8(images).transpose(0, 2, 3, 1)                     # [N,H,W,3]
    grid = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, 3), 255, np.uint8)
    for i in range(n):
        r, c = divmod(i, ncols)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = arr[i]
    return Image.fromarray(grid)


def save_wav(path: Path, audio: torch.Tensor, sample_rate: int) -> None:
    pcm = (audio.detach().float().clamp(-1, 1).cpu().numpy() * 32767).astype(np.int16)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(sample_rate)
        f.writeframes(pcm.tobytes())


def save_outputs(prefix: Path, outputs: Any, conds: list, scores: torch.Tensor | None = None,
                 sample_rate: int = 16000, upscale: int = 1) -> list[Path]:
    """Write outputs next to `prefix` in the natural format; always a JSONL of conditions and scores."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    written = []
    if isinstance(outputs, torch.Tensor) and outputs.dim() == 4 and outputs.shape[1] in (1, 3):
        img = image_grid(outputs if outputs.shape[1] == 3 else outputs.repeat(1, 3, 1, 1))
        if upscale > 1:
            img = img.resize((img.width * upscale, img.height * upscale), Image.NEAREST)
        written.append(prefix.with_suffix(".png"))
        img.save(written[-1])
    elif isinstance(outputs, torch.Tensor) and outputs.dim() == 5:
        frames = [image_grid(outputs[:, f]) for f in range(outputs.shape[1])]
        written.append(prefix.with_suffix(".gif"))
        frames[0].save(written[-1], save_all=True, append_images=frames[1:], duration=125, loop=0)
    elif isinstance(outputs, (list, torch.Tensor)) and len(outputs) and isinstance(outputs[0], torch.Tensor) \
            and outputs[0].dim() == 1 and outputs[0].dtype.is_floating_point:
        for i, a in enumerate(outputs):
            written.append(prefix.with_name(f"{prefix.name}_{i:03d}.wav"))
            save_wav(written[-1], a, sample_rate)
    records = []
    for i, c in enumerate(conds):
        rec = {"cond": c if isinstance(c, (str, int, float, dict, list)) else str(c)}
        if scores is not None:
            rec["reward"] = float(scores[i])
        if isinstance(outputs, (list, tuple)) and i < len(outputs) and isinstance(outputs[i], str):
            rec["output"] = outputs[i]
        elif isinstance(outputs, torch.Tensor) and outputs.dim() == 2 and not outputs.dtype.is_floating_point:
            rec["output"] = outputs[i].tolist()                        # token ids
        records.append(rec)
    written.append(prefix.with_suffix(".jsonl"))
    written[-1].write_text("".join(json.dumps(r) + "\n" for r in records))
    return written
