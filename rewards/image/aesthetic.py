"""LAION aesthetic predictor v2: an MLP on L2-normalized CLIP ViT-L/14 image features, score ~1-10.

Schuhmann, "improved-aesthetic-predictor" (LAION, 2022), head `sac+logos+ava1-l14-linearMSE.pth`; used as
the aesthetic reward in DDPO (Black et al., 2023). The head is five linear layers with dropout and no
nonlinearity (so it is affine at inference): 768 -> 1024 -> 128 -> 64 -> 16 -> 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from .clip_backbone import CLIPFeatures
from .inputs import check_count, resolve_device, to_image_batch
from .weights import load_state_dict, weights_path

HEAD_URL = "https://github.com/christophschuhmann/improved-aesthetic-predictor/raw/main/sac%2Blogos%2Bava1-l14-linearMSE.pth"


class AestheticMLP(nn.Module):
    """The LAION aesthetic head; state-dict keys `layers.{0,2,4,6,7}.{weight,bias}` as in the original."""

    def __init__(self, input_size: int = 768):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(input_size, 1024), nn.Dropout(0.2),
            nn.Linear(1024, 128), nn.Dropout(0.2),
            nn.Linear(128, 64), nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, embeds: Tensor) -> Tensor:  # [N, D] unit-norm -> [N]
        return self.layers(embeds)[:, 0]


class LaionAestheticReward:
    """LAION aesthetic score of each image (the prompt is ignored): `[N]` float32."""

    name = "aesthetic"
    reads_media = ("outputs:images",)  # decoded media it reads (reward server, payload.media_reads)

    @dataclass
    class Config:
        head_weights: str = "sac+logos+ava1-l14-linearMSE.pth"  # the MLP head: a local .pth/.safetensors path (or a file name in head_repo)
        head_repo: str | None = None  # hub repo to fetch head_weights from when it is not a local file; null = local only
        clip_checkpoint: str = "openai/clip-vit-large-patch14"  # the CLIP ViT-L/14 whose image features the head reads
        device: str | None = None  # device for this reward; null = the trainer's device
        dtype: Literal["float32", "float16", "bfloat16"] = "float32"  # CLIP weights dtype (the head runs in fp32)
        batch_size: int = 16  # images per forward pass

    def __init__(self, cfg: Config | None = None, device: Any = None):
        self.cfg = cfg or self.Config()
        dev = resolve_device(self.cfg.device, device)
        self.clip = CLIPFeatures(self.cfg.clip_checkpoint, None, dev, self.cfg.dtype, self.cfg.batch_size, self.name)
        path = weights_path(self.cfg.head_weights, self.cfg.head_repo, self.name, "head_weights",
                            f"Download it from {HEAD_URL}")
        sd = load_state_dict(path, self.name, "head_weights")
        if "layers.0.weight" not in sd:
            raise ValueError(f"reward {self.name!r}: head_weights={path!r} has no 'layers.0.weight'; "
                             f"expected the LAION aesthetic MLP (keys {sorted(AestheticMLP().state_dict())})")
        in_dim = sd["layers.0.weight"].shape[1]
        proj = self.clip.model.config.projection_dim
        if in_dim != proj:
            raise ValueError(f"reward {self.name!r}: the head expects {in_dim}-d CLIP features but "
                             f"clip_checkpoint={self.cfg.clip_checkpoint!r} gives {proj}-d (use CLIP ViT-L/14)")
        self.head = AestheticMLP(in_dim)
        self.head.load_state_dict(sd)
        self.head.to(dev).eval().requires_grad_(False)
        self.device = dev

    @torch.no_grad()
    def __call__(self, outputs: Any, conds: list, **metadata: Any) -> Tensor:
        images = to_image_batch(outputs)  # [N,3,H,W] in [0,1]
        check_count(images.shape[0], conds, self.name)
        embeds = self.clip.image_features(images)  # [N, D] unit norm, fp32
        return self.head(embeds.to(self.device)).float().cpu()  # [N]
