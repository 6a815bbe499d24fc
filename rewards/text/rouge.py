"""ROUGE-L F-measure of the completion's answer against a reference text, for free-form answers.

Lin (2004), "ROUGE: A Package for Automatic Evaluation of Summaries": the longest common subsequence of
normalized words (see `metrics`). Reference under `answer` (metadata column or `conds[i]`); NaN without one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .answers import extract_answer
from .inputs import completion_texts, per_sample
from .metrics import rouge_l


class RougeL:
    """ROUGE-L F-measure (LCS of normalized words) against the reference answer, in [0, 1]."""

    name = "rouge_l"
    reads_media = ()  # text outputs: no decoded images/audio anywhere (reward server, payload.media_reads)

    @dataclass
    class Config:
        answer_key: str = "answer"  # reference key in metadata columns or conds[i]
        extract: bool = True  # score the <answer>/\boxed{} content instead of the whole completion
        beta: float = 1.0  # recall weight of the F-measure (1: F1)

        def __post_init__(self) -> None:
            if self.beta <= 0:
                raise ValueError(f"beta must be > 0, got {self.beta}")

    def __init__(self, cfg: Config | None = None):
        self.cfg = cfg or self.Config()

    def __call__(self, outputs: Any, conds: list, group_ids: Tensor | None = None, **metadata: Any) -> Tensor:
        texts = completion_texts(outputs)
        refs = per_sample(conds, metadata, self.cfg.answer_key, len(texts), self.name)
        out = torch.full((len(texts),), float("nan"), dtype=torch.float32)
        for i, (text, ref) in enumerate(zip(texts, refs)):
            if ref is not None:
                out[i] = rouge_l(extract_answer(text) if self.cfg.extract else text, str(ref), self.cfg.beta)
        return out
