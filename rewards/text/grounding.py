"""Temporal IoU of a grounded answer ("from 2.5 to 7.0 seconds") against the ground-truth interval.

Used for temporal video grounding (e.g. Time-R1, Video-R1's grounding tasks): `IoU = max(0, min(e, e') -
max(s, s')) / (max(e, e') - min(s, s'))`. Parsing (`parse_interval`): the first two time values in the
answer (after `<answer>` extraction), each a number of seconds (`2.5`, `7s`) or a clock time (`1:02.5`,
`00:01:02`); so "from 2.5 to 7.0 seconds", "2.5-7.0", "[2.5, 7.0]" and "between 0:02 and 0:07" all parse.
A prediction without two times, or with end < start, scores 0. The ground truth under `answer` is a
`[start, end]` pair or a string parsed the same way; NaN without one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .answers import extract_answer
from .inputs import completion_texts, per_sample

_TIME = re.compile(r"(?<![\d.])(?:(\d+):)?(?:(\d+):)?(\d+(?:\.\d+)?)(?![\d.])")


def _seconds(m: re.Match) -> float:
    a, b, c = m.groups()
    parts = [float(x) for x in (a, b) if x is not None] + [float(c)]
    total = 0.0
    for p in parts:  # h:m:s or m:s or s
        total = total * 60.0 + p
    return total


def parse_interval(text: str) -> tuple[float, float] | None:
    """The first two time values of `text` in seconds, or None.

    >>> parse_interval("The event happens from 2.5 to 7.0 seconds."), parse_interval("between 1:02 and 1:10.5")
    ((2.5, 7.0), (62.0, 70.5))
    """
    times = [_seconds(m) for m in _TIME.finditer(text)]
    return (times[0], times[1]) if len(times) >= 2 else None


def temporal_iou(pred: Tensor, truth: Tensor) -> Tensor:
    """IoU of intervals: `pred`, `truth` `[N, 2]` (start, end) -> `[N]` float32; 0 where pred's end < start."""
    pred, truth = pred.float(), truth.float()
    inter = (torch.minimum(pred[:, 1], truth[:, 1]) - torch.maximum(pred[:, 0], truth[:, 0])).clamp(min=0)  # [N]
    union = torch.maximum(pred[:, 1], truth[:, 1]) - torch.minimum(pred[:, 0], truth[:, 0])                 # [N]
    iou = torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(union))
    return torch.where(pred[:, 1] >= pred[:, 0], iou, torch.zeros_like(iou))


def _truth_interval(value: Any, where: str) -> tuple[float, float]:
    if isinstance(value, str):
        parsed = parse_interval(value)
    elif hasattr(value, "__len__") and len(value) == 2:
        parsed = (float(value[0]), float(value[1]))
    else:
        parsed = None
    if parsed is None or parsed[1] < parsed[0]:
        raise ValueError(f"{where}: ground-truth interval {value!r} is not [start, end] with start <= end")
    return parsed


class TemporalIoU:
    """Temporal IoU in [0, 1] of the answered time interval with the ground-truth interval."""

    name = "temporal_iou"
    reads_media = ()  # text outputs: no decoded images/audio anywhere (reward server, payload.media_reads)

    @dataclass
    class Config:
        answer_key: str = "answer"  # ground-truth interval key in metadata columns or conds[i]
        extract: bool = True  # parse the <answer>/\boxed{} content instead of the whole completion

    def __init__(self, cfg: Config | None = None):
        self.cfg = cfg or self.Config()

    def __call__(self, outputs: Any, conds: list, group_ids: Tensor | None = None, **metadata: Any) -> Tensor:
        texts = completion_texts(outputs)
        truths = per_sample(conds, metadata, self.cfg.answer_key, len(texts), self.name)
        out = torch.full((len(texts),), float("nan"), dtype=torch.float32)
        rows, preds, gts = [], [], []
        for i, (text, truth) in enumerate(zip(texts, truths)):
            if truth is None:
                continue
            gt = _truth_interval(truth, f"{self.name}: sample {i}")
            parsed = parse_interval(extract_answer(text) if self.cfg.extract else text)
            if parsed is None:
                out[i] = 0.0
                continue
            rows.append(i)
            preds.append(parsed)
            gts.append(gt)
        if rows:
            out[torch.tensor(rows)] = temporal_iou(torch.tensor(preds), torch.tensor(gts))
        return out
