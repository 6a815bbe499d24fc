"""Length rewards: closeness to a target length, or DAPO's soft overlong punishment.

`mode="target"`: `r = max(0, 1 - |L - target| / target)`, 1 at the target, 0 at 0 or 2 x target.
`mode="overlong"` (DAPO, Yu et al. 2025, "soft overlong punishment"), with `Lmax = max_length` and
`C = cache`: `r = 0` for `L <= Lmax - C`, `(Lmax - C - L) / C` for `Lmax - C < L <= Lmax`, `-1` beyond.
L counts words (whitespace split), characters, or tokens; tokens come from metadata `completion_lengths`
(ints `[N]`) or `completion_ids` (one id list per sample), since only the policy knows its tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from .inputs import completion_texts


def target_length_reward(lengths: Tensor, target: float) -> Tensor:
    """`max(0, 1 - |L - target| / target)` elementwise; `lengths` `[N]` -> `[N]` float32."""
    lengths = lengths.float()
    return (1.0 - (lengths - target).abs() / target).clamp(min=0.0)


def overlong_penalty(lengths: Tensor, max_length: float, cache: float) -> Tensor:
    """DAPO soft overlong punishment elementwise; `lengths` `[N]` -> `[N]` float32 in [-1, 0]."""
    lengths = lengths.float()
    start = max_length - cache
    ramp = (start - lengths) / cache                                  # [N], 0 at start, -1 at max_length
    return torch.where(lengths <= start, torch.zeros_like(lengths),
                       torch.where(lengths <= max_length, ramp, torch.full_like(lengths, -1.0)))


class LengthReward:
    """Length shaping: a target length (triangle) or DAPO's soft overlong punishment."""

    name = "length"
    reads_media = ()  # text outputs: no decoded images/audio anywhere (reward server, payload.media_reads)

    @dataclass
    class Config:
        mode: Literal["target", "overlong"] = "target"  # triangle around `target`, or DAPO's overlong ramp
        unit: Literal["words", "chars", "tokens"] = "words"  # how L is counted (tokens: from metadata)
        target: float = 100.0  # mode=target: the length scoring 1
        max_length: float = 512.0  # mode=overlong: length beyond which the reward is -1
        cache: float = 128.0  # mode=overlong: width of the linear ramp before max_length

        def __post_init__(self) -> None:
            if self.target <= 0:
                raise ValueError(f"target must be > 0, got {self.target}")
            if not 0 < self.cache <= self.max_length:
                raise ValueError(f"cache must be in (0, max_length={self.max_length}], got {self.cache}")

    def __init__(self, cfg: Config | None = None):
        self.cfg = cfg or self.Config()

    def lengths(self, outputs: Any, metadata: dict) -> Tensor:
        """L per sample `[N]` float32 in the configured unit."""
        if self.cfg.unit == "tokens":
            if metadata.get("completion_lengths") is not None:
                return torch.as_tensor(metadata["completion_lengths"], dtype=torch.float32).reshape(-1)
            if metadata.get("completion_ids") is not None:
                return torch.tensor([len(ids) for ids in metadata["completion_ids"]], dtype=torch.float32)
            raise ValueError(f"{self.name}: unit='tokens' needs metadata 'completion_lengths' or "
                             "'completion_ids'; or use unit='words'/'chars'")
        texts = completion_texts(outputs)
        count = (lambda t: len(t.split())) if self.cfg.unit == "words" else len
        return torch.tensor([count(t) for t in texts], dtype=torch.float32)

    def __call__(self, outputs: Any, conds: list, group_ids: Tensor | None = None, **metadata: Any) -> Tensor:
        lengths = self.lengths(outputs, metadata)
        if lengths.shape[0] != len(conds):
            raise ValueError(f"{self.name}: {lengths.shape[0]} lengths for {len(conds)} conds")
        if self.cfg.mode == "target":
            return target_length_reward(lengths, self.cfg.target)
        return overlong_penalty(lengths, self.cfg.max_length, self.cfg.cache)
