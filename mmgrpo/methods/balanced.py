"""Balanced Aggregation (S4), registered into `mmgrpo.aggregation`: token means per advantage sign, weighted by
sequence counts.

Like every mode it is a weight function `fn(mask, ...) -> weights [N, T]` with `loss = sum(loss * weights)`.
Its normalizers are counts over the whole optimizer step (every micro-batch, every rank): a trainer that
honours the `step_counts` hook all-sums `balanced.step_counts(mask, advantages)` over the step and passes the
result as `step_counts`; without it the counts of the micro-batch at hand are used, which is exact when one
micro-batch holds the whole optimizer step on one process.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..aggregation import register

BUCKETS = ("positive", "negative", "zero")


def advantage_sign(advantages: Tensor, mask: Tensor) -> Tensor:
    """[N] sign of each sequence's advantage (+1, -1, 0); dense [N, T] advantages use their valid-position mean."""
    if advantages.dim() == 2:
        m = mask.to(advantages.dtype)
        a = (advantages * m).sum(1) / m.sum(1).clamp(min=1)
    else:
        a = advantages
    return torch.sign(a.to(torch.float64)).to(torch.long)


def _bucket_counts(mask: Tensor, advantages: Tensor) -> list[float]:
    """[n_pos, n_neg, n_zero, tokens_pos, tokens_neg, tokens_zero] of sequences with a valid position."""
    sign = advantage_sign(advantages, mask)
    tokens = mask.float().sum(1)
    has = tokens > 0
    out_n, out_t = [], []
    for s in (1, -1, 0):
        b = has & (sign == s)
        out_n.append(float(b.sum()))
        out_t.append(float(tokens[b].sum()))
    return out_n + out_t


@register("balanced", "token means computed separately over positive- and negative-advantage sequences, "
          "combined with weights proportional to their sequence counts", ref="S4 Balanced Aggregation",
          requires=("advantages", "step_counts"))
def balanced(mask: Tensor, advantages: Tensor | None = None, step_counts: list | None = None) -> Tensor:
    """Balanced Aggregation: loss = sum_b (n_b / n) * (sum_{i in b, t} l m / sum_{i in b, t} m), b in {+, -, 0}.

    Token aggregation couples a response's weight to its length and thereby to its sign (long failed
    answers outweigh short correct ones); sequence aggregation down-weights long responses. BA takes token
    means within each sign, so lengths only compete against same-sign peers, and weights the two means by
    how many sequences they hold. Zero-advantage sequences form their own bucket. When every sequence has
    the same sign this is exactly `token_mean`.

    Use when: correct and incorrect responses differ in length (e.g. failures ramble), or response lengths
    vary a lot.
    """
    if advantages is None:
        raise ValueError("aggregation 'balanced' needs the advantages of the micro-batch (trainer context "
                         "'advantages'); call it as weights(mask, 'balanced', advantages=adv)")
    counts = list(step_counts) if step_counts is not None else _bucket_counts(mask, advantages)
    if len(counts) != 6:
        raise ValueError(f"aggregation 'balanced': step_counts must hold 6 numbers "
                         f"(sequences and tokens per sign bucket), got {counts}")
    n_b, t_b = counts[:3], counts[3:]
    n = max(sum(n_b), 1.0)
    sign = advantage_sign(advantages, mask)
    m = mask.float()
    w = torch.zeros_like(m)
    for k, s in enumerate((1, -1, 0)):
        if t_b[k] > 0:
            w = torch.where((sign == s).unsqueeze(1), m * (n_b[k] / n) / t_b[k], w)
    return w


balanced.step_counts = _bucket_counts   # the per-step normalizers a trainer may all-sum and pass back
