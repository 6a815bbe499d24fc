"""Groupwise rewards: the rank of a pointwise reward within its group, and a group's set diversity
redistributed to its members by leave-one-out contribution.

Both see whole groups (`groupwise = True`; the trainer scores after gathering) and use `group_ids`.
Set diversity follows Supergroup GRPO (SGRPO): D(S) = 1 - mean pairwise cosine similarity of the members'
features, and member i receives D(S) - D(S minus i), its leave-one-out contribution.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor


def group_rank(scores: Tensor, group_ids: Tensor) -> Tensor:
    """Normalized rank within each group, in [0, 1]: (members below + half the other ties) / (valid - 1).

    `scores` `[N]` (NaN = not applicable, kept NaN and left out of the ranks), `group_ids` `[N]`. A group with
    one valid member gets 0.5. Vectorized as an `[N, N]` comparison (groups are small).
    """
    s = scores.float()
    valid = ~torch.isnan(s)  # [N]
    pair = (group_ids[:, None] == group_ids[None, :]) & valid[:, None] & valid[None, :]  # [N, N]
    pair.fill_diagonal_(False)
    below = (pair & (s[None, :] < s[:, None])).sum(-1).float()  # [N]
    ties = (pair & (s[None, :] == s[:, None])).sum(-1).float()  # [N]
    others = pair.sum(-1).float()  # valid members of my group, me excluded
    rank = torch.where(others > 0, (below + 0.5 * ties) / others.clamp_min(1), torch.full_like(s, 0.5))
    return torch.where(valid, rank, torch.full_like(s, float("nan")))


def set_diversity(feats: Tensor) -> Tensor:
    """1 - mean pairwise cosine of `[G, D]` features (0 for fewer than two members)."""
    g = feats.shape[0]
    if g < 2:
        return torch.zeros(())
    f = torch.nn.functional.normalize(feats.float(), dim=-1)
    sim = f @ f.T  # [G, G]
    pairs = (sim.sum() - sim.diagonal().sum()) / 2
    return 1 - pairs / (g * (g - 1) / 2)


def leave_one_out_diversity(feats: Tensor, group_ids: Tensor) -> Tensor:
    """Per member: D(group) - D(group without it), `[N]`; NaN for members of single-member groups.

    `feats` `[N, D]`, `group_ids` `[N]`. Vectorized per group from the similarity row sums:
    pair sum P = (sum C - trace C) / 2; without i it is P - r_i with r_i = sum_{j != i} C_ij.
    """
    out = torch.full((feats.shape[0],), float("nan"))
    f = torch.nn.functional.normalize(feats.float(), dim=-1)
    for gid in torch.unique(group_ids):
        idx = (group_ids == gid).nonzero()[:, 0]
        g = idx.numel()
        if g < 2:
            continue
        sim = f[idx] @ f[idx].T  # [G, G]
        row = sim.sum(-1) - sim.diagonal()  # [G]
        pairs = row.sum() / 2
        d_all = 1 - pairs / (g * (g - 1) / 2)
        d_without = 1 - (pairs - row) / ((g - 1) * (g - 2) / 2) if g > 2 else torch.zeros(g)  # [G]
        out[idx] = d_all - d_without
    return out


def _require_groups(group_ids: Any, n: int, name: str) -> Tensor:
    if group_ids is None:
        raise ValueError(f"reward {name!r} is groupwise and needs group_ids=[N] (the trainer passes them)")
    gid = torch.as_tensor(group_ids).reshape(-1)
    if gid.shape[0] != n:
        raise ValueError(f"reward {name!r}: group_ids has {gid.shape[0]} entries for {n} samples")
    return gid.cpu()


class GroupRankReward:
    """A pointwise reward turned into its normalized rank within each group, in [0, 1]."""

    name = "group_rank"
    groupwise = True

    @dataclass
    class Config:
        reward: dict = field(default_factory=lambda: {"name": "jpeg_compressibility"})  # the pointwise reward spec: {name: ..., **params}

    def __init__(self, cfg: Config | None = None, device: Any = None, reward: Any = None):
        self.cfg = cfg or self.Config()
        if reward is None:
            from mmgrpo.components import REWARDS, build

            reward = build(REWARDS, dict(self.cfg.reward), f"{self.name}.reward", device=device)
        self.reward = reward
        self.name = f"{self.name}[{getattr(reward, 'name', type(reward).__name__)}]"
        from .payload import media_reads

        self.reads_media = tuple(sorted(f"{p}:{k}" for p, k in media_reads(reward)))  # the wrapped reward's

    def __call__(self, outputs: Any, conds: list, group_ids: Any = None, **metadata: Any) -> Tensor:
        gid = _require_groups(group_ids, len(conds), self.name)
        scores = torch.as_tensor(self.reward(outputs, conds, group_ids=group_ids, **metadata), dtype=torch.float32)
        return group_rank(scores.cpu().reshape(-1), gid)


class GroupDiversityReward:
    """Leave-one-out contribution of each member to its group's set diversity (SGRPO)."""

    name = "group_diversity"
    groupwise = True

    @dataclass
    class Config:
        features: Literal["clip_image", "clip_text", "flatten"] = "clip_image"  # image/video frames via CLIP, text via CLIP, or the outputs tensor flattened
        checkpoint: str = "openai/clip-vit-large-patch14"  # CLIPModel for the clip_* features: hub id or local dir
        processor: str | None = None  # processor source; null = the checkpoint's own
        device: str | None = None  # device for this reward; null = the trainer's device
        dtype: Literal["float32", "float16", "bfloat16"] = "float32"  # model weights dtype (features in fp32)
        batch_size: int = 32  # images per forward pass

    def __init__(self, cfg: Config | None = None, device: Any = None):
        self.cfg = cfg or self.Config()
        self.clip = None
        # decoded media it reads (reward server, payload.media_reads): images, except for CLIP text features
        self.reads_media = () if self.cfg.features == "clip_text" else ("outputs:images",)
        if self.cfg.features != "flatten":
            from mmgrpo.rewards.image.clip_backbone import CLIPFeatures
            from mmgrpo.rewards.image.inputs import resolve_device

            self.clip = CLIPFeatures(self.cfg.checkpoint, self.cfg.processor, resolve_device(self.cfg.device, device),
                                     self.cfg.dtype, self.cfg.batch_size, self.name)

    def features(self, outputs: Any) -> Tensor:
        """`[N, D]`: CLIP image features (videos: mean over frames), CLIP text features, or flattened outputs."""
        if self.cfg.features == "flatten":
            return torch.as_tensor(outputs).float().flatten(1).cpu()
        if self.cfg.features == "clip_text":
            if not (isinstance(outputs, (list, tuple)) and all(isinstance(t, str) for t in outputs)):
                raise TypeError(f"reward {self.name!r}: features=clip_text needs a list of strings as outputs")
            return self.clip.text_features(list(outputs))
        from mmgrpo.rewards.image.inputs import to_image_batch

        if isinstance(outputs, Tensor) and outputs.ndim == 5:  # videos [N, F, 3, H, W]
            n, f = outputs.shape[:2]
            return self.clip.image_features(to_image_batch(outputs.flatten(0, 1))).reshape(n, f, -1).mean(1)
        return self.clip.image_features(to_image_batch(outputs))

    def __call__(self, outputs: Any, conds: list, group_ids: Any = None, **metadata: Any) -> Tensor:
        gid = _require_groups(group_ids, len(conds), self.name)
        return leave_one_out_diversity(self.features(outputs), gid).float()
