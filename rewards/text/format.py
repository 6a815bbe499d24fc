"""Format reward: 1 if a completion is `<think>...</think><answer>...</answer>` and nothing else, else 0.

The R1-style format check (DeepSeek-R1, 2025; TRL's `think_format_reward`): exactly one think block
followed by exactly one answer block, only whitespace around and between them, neither block empty
unless `allow_empty_think`. Tags are matched case-sensitively.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .inputs import completion_texts

_TAGS = ("<think>", "</think>", "<answer>", "</answer>")
_FORMAT = re.compile(r"\s*<think>(.*?)</think>\s*<answer>(.*?)</answer>\s*", re.DOTALL)


def has_think_answer_format(text: str, allow_empty_think: bool = False) -> bool:
    """Whether `text` is exactly one think block then one answer block (see the module docstring)."""
    m = _FORMAT.fullmatch(text)
    if m is None or any(text.count(tag) != 1 for tag in _TAGS):
        return False
    think, answer = m.group(1).strip(), m.group(2).strip()
    return bool(answer) and (bool(think) or allow_empty_think)


def think_answer_format_reward(completions: list, conds: list | None = None, **kwargs: Any) -> list[float]:
    """A plain-function reward in TRL's style: 1.0 for the think/answer format, else 0.0.

    Usable as an mmgrpo reward as it is (`reward(outputs, conds, group_ids=..., **metadata)`): conditions
    and metadata are accepted and ignored; a returned list becomes a float32 tensor.

    >>> think_answer_format_reward([
    ...     "<think>2 + 2 is 4</think><answer>4</answer>",
    ...     "<think>2 + 2 is 4</think>\\n<answer>4</answer>\\n",
    ...     "The answer is 4",
    ...     "<think>hmm</think><answer>4</answer><answer>5</answer>",
    ...     "<think></think><answer>4</answer>",
    ... ])
    [1.0, 1.0, 0.0, 0.0, 0.0]
    """
    return [float(has_think_answer_format(t)) for t in completion_texts(completions, "completions")]


class ThinkAnswerFormat:
    """1/0: the completion is `<think>...</think><answer>...</answer>`."""

    name = "think_answer_format"
    reads_media = ()  # text outputs: no decoded images/audio anywhere (reward server, payload.media_reads)

    @dataclass
    class Config:
        allow_empty_think: bool = False  # accept `<think></think>` (an empty reasoning block)

    def __init__(self, cfg: Config | None = None):
        self.cfg = cfg or self.Config()

    def __call__(self, outputs: Any, conds: list, group_ids: Tensor | None = None, **metadata: Any) -> Tensor:
        texts = completion_texts(outputs)
        return torch.tensor([float(has_think_answer_format(t, self.cfg.allow_empty_think)) for t in texts],
                            dtype=torch.float32)
