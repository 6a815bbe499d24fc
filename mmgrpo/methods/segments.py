"""Segment bookkeeping on the time axis: dense segment indices, per-segment means and segment ends.

A segment is a run of positions of one sample that share a segment id (a sentence, a ranked item, a phase,
an agent turn). Segment ids are only compared within a sample; masked positions belong to no segment.
"""

from __future__ import annotations

import torch
from torch import Tensor


def segment_index(segment_ids: Tensor, mask: Tensor) -> tuple[Tensor, int]:
    """[N, T] segment ids -> (dense index [N, T] in 0..S-1 unique over (sample, id); -1 where masked, S)."""
    n, t = segment_ids.shape
    m = mask.bool()
    rows = torch.arange(n, device=segment_ids.device).unsqueeze(1).expand(n, t)
    keys = torch.stack([rows[m], segment_ids.to(rows.dtype)[m]], 1)                # [M, 2]
    idx = torch.full((n, t), -1, dtype=torch.long, device=segment_ids.device)
    if keys.numel() == 0:
        return idx, 0
    uniq, inv = torch.unique(keys, dim=0, return_inverse=True)
    idx[m] = inv
    return idx, uniq.shape[0]


def segment_mean(values: Tensor, segment_ids: Tensor, mask: Tensor) -> Tensor:
    """[N, T] -> [N, T]: at every valid position, the mean of `values` over its segment (0 where masked).

    Accumulates in float64 so that a segment of one position returns its value exactly.
    """
    idx, s = segment_index(segment_ids, mask)
    m = idx >= 0
    out = torch.zeros_like(values)
    if s == 0:
        return out
    v = values[m].double()
    total = torch.zeros(s, dtype=torch.float64, device=values.device).index_add(0, idx[m], v)
    count = torch.zeros(s, dtype=torch.float64, device=values.device).index_add(0, idx[m], torch.ones_like(v))
    mean = (total / count).to(values.dtype)                                             # [S]
    return torch.where(m, mean[idx.clamp(min=0)], out)      # differentiable through index_add and gather


def segment_end_values(values: Tensor, segment_ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Per position, the value at the LAST valid position of its segment, and that of the segment before.

    Returns (end [N, T], prev_end [N, T]), NaN where masked; prev_end is NaN in a sample's first segment (the
    caller decides what the value before the first segment is). Segments are ordered by their first position;
    positions sharing an id form one segment even if not contiguous.
    """
    n, t = values.shape
    idx, s = segment_index(segment_ids, mask)
    m = idx >= 0
    end = torch.full_like(values, float("nan"))
    prev = torch.full_like(values, float("nan"))
    if s == 0:
        return end, prev
    pos = torch.arange(t, device=values.device).expand(n, t)
    rows = torch.arange(n, device=values.device).unsqueeze(1).expand(n, t)
    first = torch.full((s,), t, dtype=torch.long, device=values.device)
    first.scatter_reduce_(0, idx[m], pos[m], reduce="amin")                           # [S]
    last = torch.full((s,), -1, dtype=torch.long, device=values.device)
    last.scatter_reduce_(0, idx[m], pos[m], reduce="amax")                            # [S]
    row = torch.zeros(s, dtype=torch.long, device=values.device).scatter_(0, idx[m], rows[m])   # [S]
    seg_end = values[row, last]                                                         # [S]
    order = torch.argsort(row * (t + 1) + first)                                        # by (sample, start)
    seg_prev = torch.full_like(seg_end, float("nan"))
    same_row = row[order[1:]] == row[order[:-1]]
    seg_prev[order[1:]] = torch.where(same_row, seg_end[order[:-1]], torch.full_like(seg_end[:-1], float("nan")))
    end[m] = seg_end[idx[m]]
    prev[m] = seg_prev[idx[m]]
    return end, prev
