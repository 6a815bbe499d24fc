"""HPS v2 / v2.1: human preference score from an OpenCLIP ViT-H-14 fine-tuned on HPD v2.

Wu et al., "Human Preference Score v2: A Solid Benchmark for Evaluating Human Preferences of Text-to-Image
Synthesis" (2023). score = cos(image_features, text_features) with no logit scale (typically ~0.2-0.35),
as in the reference `hpsv2.score`. Weights: `HPS_v2.1_compressed.pt` / `HPS_v2_compressed.pt` (hub repo xswu/HPSv2).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from .inputs import check_count, chunks, prompts_of, resolve_device, resolve_dtype, to_image_batch
from .weights import load_state_dict, weights_path


class HPSv2Reward:
    """HPS v2(.1) score of each (image, prompt) pair: `[N]` float32."""

    name = "hpsv2"
    reads_media = ("outputs:images",)  # decoded media it reads (reward server, payload.media_reads)

    @dataclass
    class Config:
        weights: str = "HPS_v2.1_compressed.pt"  # HPS weights: a local file, or a file name in hub_repo
        hub_repo: str | None = "xswu/HPSv2"  # hub repo for weights when it is not a local file; null = local only
        model_name: str = "ViT-H-14"  # the open_clip architecture the weights belong to
        device: str | None = None  # device for this reward; null = the trainer's device
        dtype: Literal["float32", "float16", "bfloat16"] = "float32"  # model weights dtype (scores are computed in fp32)
        batch_size: int = 16  # images per forward pass
        weights_only: bool = True  # safe torch.load; set false only for a weights file you trust that needs pickle

    def __init__(self, cfg: Config | None = None, device: Any = None):
        import open_clip

        self.cfg = cfg or self.Config()
        self.device = resolve_device(self.cfg.device, device)
        self.dtype = resolve_dtype(self.cfg.dtype, f"reward {self.name!r}")
        if open_clip.get_model_config(self.cfg.model_name) is None:
            raise ValueError(f"reward {self.name!r}: model_name={self.cfg.model_name!r} is not an open_clip "
                             "architecture (HPS v2 uses 'ViT-H-14')")
        path = weights_path(self.cfg.weights, self.cfg.hub_repo, self.name, "weights",
                            "HPS v2.1 weights: https://huggingface.co/xswu/HPSv2 (HPS_v2.1_compressed.pt)")
        self.model = open_clip.create_model(self.cfg.model_name, pretrained=None, load_weights=False)
        sd = load_state_dict(path, self.name, "weights", weights_only=self.cfg.weights_only)
        own = self.model.state_dict()
        missing = [k for k in own if k not in sd]
        if missing:
            raise ValueError(f"reward {self.name!r}: weights={path!r} lacks {len(missing)} parameters of "
                             f"{self.cfg.model_name} (first: {missing[:3]}); is this an HPS v2 checkpoint?")
        wrong = [f"{k} {list(sd[k].shape)} != {list(v.shape)}" for k, v in own.items() if sd[k].shape != v.shape]
        if wrong:
            raise ValueError(f"reward {self.name!r}: weights={path!r} do not fit model_name="
                             f"{self.cfg.model_name!r}: {len(wrong)} shape mismatches (first: {wrong[0]})")
        unexpected = [k for k in sd if k not in own]
        if unexpected:
            warnings.warn(f"reward {self.name!r}: ignored {len(unexpected)} extra keys in {path!r} "
                          f"(first: {unexpected[:3]})", stacklevel=2)
        self.model.load_state_dict({k: sd[k] for k in own})
        self.model.to(self.device, self.dtype).eval().requires_grad_(False)
        self.tokenizer = open_clip.get_tokenizer(self.cfg.model_name)
        pre = open_clip.get_model_preprocess_cfg(self.model)
        size = pre.get("size", 224)
        self.size = (size, size) if isinstance(size, int) else tuple(size)  # (H, W)
        self.mean = torch.tensor(pre["mean"], device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(pre["std"], device=self.device).view(1, 3, 1, 1)

    def pixel_values(self, images: Tensor) -> Tensor:
        """float `[n,3,H,W]` in [0,1] -> resized (shortest side, bicubic), center-cropped, normalized."""
        from torchvision.transforms.v2 import functional as TF

        x = images.to(self.device)
        x = TF.resize(x, [min(self.size)], interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
        x = TF.center_crop(x, list(self.size))
        return ((x - self.mean) / self.std).to(self.dtype)

    @torch.no_grad()
    def __call__(self, outputs: Any, conds: list, **metadata: Any) -> Tensor:
        images = to_image_batch(outputs)  # [N,3,H,W] in [0,1]
        check_count(images.shape[0], conds, self.name)
        prompts = prompts_of(conds)
        scores = []
        for sl in chunks(images.shape[0], self.cfg.batch_size):
            img = self.model.encode_image(self.pixel_values(images[sl]), normalize=True).float()  # [n, D]
            txt = self.model.encode_text(self.tokenizer(prompts[sl]).to(self.device), normalize=True).float()  # [n, D]
            scores.append((img * txt).sum(-1).cpu())  # diag(img @ txt.T)
        return torch.cat(scores).float()
