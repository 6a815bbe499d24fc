"""Find and load a reward's weights file: a local path, or a file in a hub repo when one is named."""

from __future__ import annotations

import os
from typing import Any


def weights_path(path: str, hub_repo: str | None, reward: str, field: str, hint: str) -> str:
    """`path` if it is a file; else `hf_hub_download(hub_repo, path)`; else an error saying where to get it."""
    if os.path.isfile(path):
        return path
    if hub_repo:
        try:
            from huggingface_hub import hf_hub_download

            return hf_hub_download(hub_repo, path)
        except Exception as exc:  # noqa: BLE001 - re-raised with context
            raise FileNotFoundError(
                f"reward {reward!r}: {field}={path!r} is not a local file and downloading it from the hub repo "
                f"{hub_repo!r} failed ({type(exc).__name__}: {exc}). {hint}"
            ) from exc
    raise FileNotFoundError(f"reward {reward!r}: {field}={path!r} is not a file. {hint}")


def load_state_dict(path: str, reward: str, field: str, weights_only: bool = True) -> dict[str, Any]:
    """A state dict from `.safetensors` or a torch pickle (`{"state_dict": ...}` unwrapped; safe load by default)."""
    import torch

    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as exc:  # noqa: BLE001 - re-raised with context
        raise ValueError(
            f"reward {reward!r}: could not load {field}={path!r} with weights_only={weights_only} "
            f"({type(exc).__name__}: {exc}). If you trust this file, set weights_only: false."
        ) from exc
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"reward {reward!r}: {field}={path!r} holds a {type(obj).__name__}, not a state dict")
    return {k.removeprefix("module."): v for k, v in obj.items()}
