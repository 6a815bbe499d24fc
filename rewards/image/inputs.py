"""Reward inputs made uniform: images to float [N,3,H,W] in [0,1], conds to prompt text, devices and chunks.

Rewards receive what the policy decoded: a float tensor `[N,3,H,W]` in [0, 1] (the flow adapters'
convention), a uint8 tensor, or a list of PIL images / `[3,H,W]` tensors. Conditions are prompt strings
or mappings that carry the prompt under `prompt` (GenEval's metadata lines are such mappings).
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import torch
from torch import Tensor

PROMPT_KEYS = ("prompt", "text", "caption")

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def to_image_batch(outputs: Any, where: str = "outputs") -> Tensor:
    """Images -> float32 `[N,3,H,W]` in [0, 1] on their current device.

    Accepts a float tensor in [0, 1] (values outside are clamped), a uint8 tensor (divided by 255), a
    list of PIL images or a list of `[3,H,W]` tensors of one size. Single-channel images are repeated to RGB.
    """
    if isinstance(outputs, Tensor):
        images = outputs
    elif isinstance(outputs, (list, tuple)) and len(outputs) > 0:
        items = [_one_image(x, f"{where}[{i}]") for i, x in enumerate(outputs)]
        sizes = {tuple(x.shape) for x in items}
        if len(sizes) > 1:
            raise ValueError(f"{where}: images have different shapes {sorted(sizes)}; resize them to one size")
        images = torch.stack(items)
    else:
        raise TypeError(f"{where}: expected an image tensor [N,3,H,W] or a list of images, got {type(outputs).__name__}")
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"{where}: expected images of shape [N,3,H,W], got {list(images.shape)}")
    if images.dtype == torch.uint8:
        images = images.float() / 255.0
    images = images.float().clamp(0.0, 1.0)
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    return images


def _one_image(x: Any, where: str) -> Tensor:
    if isinstance(x, Tensor):
        if x.ndim != 3:
            raise ValueError(f"{where}: expected a [3,H,W] tensor, got shape {list(x.shape)}")
        return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a core dependency
        Image = None
    if Image is not None and isinstance(x, Image.Image):
        import numpy as np

        arr = np.asarray(x.convert("RGB"), dtype=np.uint8)  # [H, W, 3]
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255.0
    raise TypeError(f"{where}: expected a PIL image or a [3,H,W] tensor, got {type(x).__name__}")


def to_uint8_hwc(images: Tensor) -> Tensor:
    """float `[N,3,H,W]` in [0,1] -> uint8 `[N,H,W,3]` on the CPU, rounding like DDPO (`(x*255).round()`)."""
    return (images.detach().float().cpu() * 255.0).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def prompt_text(cond: Any, where: str = "conds") -> str:
    """The prompt of one condition: the string itself, or the `prompt`/`text`/`caption` entry of a mapping."""
    if isinstance(cond, str):
        return cond
    if isinstance(cond, dict):
        for key in PROMPT_KEYS:
            if isinstance(cond.get(key), str):
                return cond[key]
        raise ValueError(f"{where}: a mapping condition needs a string under one of {list(PROMPT_KEYS)}; got keys {sorted(cond)}")
    raise TypeError(f"{where}: expected a prompt string or a mapping with 'prompt', got {type(cond).__name__}")


def prompts_of(conds: Sequence[Any]) -> list[str]:
    return [prompt_text(c, f"conds[{i}]") for i, c in enumerate(conds)]


def check_count(n_outputs: int, conds: Sequence[Any], reward: str) -> None:
    if n_outputs != len(conds):
        raise ValueError(f"reward {reward!r}: got {n_outputs} outputs but {len(conds)} conds; they must pair up")


def chunks(n: int, size: int) -> Iterator[slice]:
    """Slices `[0, size), [size, 2*size), ...` covering `range(n)`."""
    if size < 1:
        raise ValueError(f"batch_size must be >= 1, got {size}")
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def resolve_device(config_device: str | None, runtime_device: Any) -> torch.device:
    """The config's device wins (to put a reward on its own GPU), then the trainer's, then the CPU."""
    return torch.device(config_device or runtime_device or "cpu")


def resolve_dtype(name: str, where: str) -> torch.dtype:
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"{where}: dtype {name!r} is not one of {sorted(DTYPES)}") from None


def load_pretrained(loader: Any, source: str, reward: str, what: str, **kwargs: Any) -> Any:
    """`loader.from_pretrained(source, **kwargs)` with an error naming the reward, the field and the fix."""
    try:
        return loader.from_pretrained(source, **kwargs)
    except Exception as exc:  # noqa: BLE001 - re-raised with context
        raise OSError(
            f"reward {reward!r}: could not load {what} from {source!r} ({type(exc).__name__}: {exc}). "
            "Give a local directory in the save_pretrained layout, or a hub id with the hub reachable "
            "(or already in the local Hugging Face cache)."
        ) from exc


def pooled(out: Any) -> Tensor:
    """`get_image_features`/`get_text_features` return a tensor (transformers v4) or an output with
    `pooler_output` holding the projected features (v5)."""
    return out if isinstance(out, Tensor) else out.pooler_output


def nan_scores(n: int) -> Tensor:
    return torch.full((n,), float("nan"), dtype=torch.float32)
