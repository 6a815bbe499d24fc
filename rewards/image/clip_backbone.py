"""A transformers CLIP model with its processor, giving L2-normalized fp32 image and text features.

Shared by PickScore, CLIP score, the LAION aesthetic predictor, the video rewards and the groupwise
diversity reward. Images go through the checkpoint's own image processor (torchvision backend, on the
reward's device); text is padded to the full context (77 for CLIP) so a prompt's features never depend
on the other prompts of its batch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .inputs import chunks, load_pretrained, pooled, resolve_dtype


class CLIPFeatures:
    """Load `CLIPModel` from `checkpoint` and its processor from `processor` (defaults to the checkpoint)."""

    def __init__(self, checkpoint: str, processor: str | None, device: torch.device, dtype: str,
                 batch_size: int, reward: str):
        from transformers import AutoProcessor, CLIPModel

        self.device = device
        self.dtype = resolve_dtype(dtype, f"reward {reward!r}")
        self.batch_size = batch_size
        self.reward = reward
        self.model = load_pretrained(CLIPModel, checkpoint, reward, "the CLIP model (checkpoint)", dtype=self.dtype)
        self.model.to(device).eval().requires_grad_(False)
        self.processor = load_pretrained(AutoProcessor, processor or checkpoint, reward, "the CLIP processor (processor)")
        self.max_length = int(self.model.config.text_config.max_position_embeddings)

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().float().exp())

    @torch.no_grad()
    def image_features(self, images: Tensor) -> Tensor:
        """float `[N,3,H,W]` in [0,1] -> L2-normalized fp32 `[N, D]` on the CPU."""
        out = []
        for sl in chunks(images.shape[0], self.batch_size):
            pixels = self.pixel_values(images[sl])
            feats = pooled(self.model.get_image_features(pixel_values=pixels)).float()  # [n, D]
            out.append(torch.nn.functional.normalize(feats, dim=-1).cpu())
        return torch.cat(out) if out else torch.zeros(0, self.model.config.projection_dim)

    def pixel_values(self, images: Tensor) -> Tensor:
        """float `[n,3,H,W]` in [0,1] -> the model's `pixel_values` (resized, cropped, normalized)."""
        proc = getattr(self.processor, "image_processor", self.processor)
        batch = proc(images=images.to(self.device), return_tensors="pt", do_rescale=False, device=self.device)
        return batch["pixel_values"].to(self.device, self.dtype)

    @torch.no_grad()
    def text_features(self, texts: list[str]) -> Tensor:
        """prompts -> L2-normalized fp32 `[N, D]` on the CPU."""
        out = []
        for sl in chunks(len(texts), self.batch_size):
            tokens = self.tokenize(texts[sl])
            feats = pooled(self.model.get_text_features(**tokens)).float()  # [n, D]
            out.append(torch.nn.functional.normalize(feats, dim=-1).cpu())
        return torch.cat(out) if out else torch.zeros(0, self.model.config.projection_dim)

    def tokenize(self, texts: list[str]) -> dict[str, Any]:
        tok = getattr(self.processor, "tokenizer", self.processor)
        batch = tok(list(texts), padding="max_length", truncation=True, max_length=self.max_length,
                    return_tensors="pt")
        return {k: v.to(self.device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}
