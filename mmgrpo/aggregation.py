"""Loss aggregation: `aggregate(loss [N,T], mask [N,T], mode, **params) -> scalar`, kept apart from the loss.

Each mode is a weight function `fn(mask, num_seqs=..., num_tokens=..., **params) -> weights [N, T]`,
so that `aggregate = sum(loss * weights)`. `num_seqs` (sequences with a valid position), `num_tokens` and `num_samples` are the normalizers of the whole
optimizer step (every micro-batch on every rank); the trainer passes them so that micro-batch 8 x
accumulation 1 equals 2 x 4 and one rank equals two. Called alone, they default to the counts of `mask`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .registry import Registry

AGGREGATIONS: Registry = Registry("aggregation mode", positional=("mask",))
get = AGGREGATIONS.get
names = AGGREGATIONS.names
register = AGGREGATIONS.register


def _counts(mask: Tensor, num_seqs: float | None, num_tokens: float | None) -> tuple[float, float]:
    m = mask.float()
    if num_seqs is None:
        num_seqs = float((m.sum(1) > 0).sum())
    if num_tokens is None:
        num_tokens = float(m.sum())
    return max(num_seqs, 1.0), max(num_tokens, 1.0)


@register("seq_mean", "mean over sequences of each sequence's token mean (GRPO)", ref="GRPO",
          requires=("num_seqs", "num_tokens"))
def seq_mean(mask: Tensor, num_seqs: float | None = None, num_tokens: float | None = None) -> Tensor:
    """loss = mean_i( sum_t l m / sum_t m )."""
    m = mask.float()
    n, _ = _counts(mask, num_seqs, num_tokens)
    return m / m.sum(1, keepdim=True).clamp(min=1) / n


@register("token_mean", "mean over all valid tokens of the optimizer step, all ranks (DAPO/BNPO)", ref="DAPO",
          requires=("num_seqs", "num_tokens"))
def token_mean(mask: Tensor, num_seqs: float | None = None, num_tokens: float | None = None) -> Tensor:
    """loss = sum l m / sum m over the whole optimizer step (global token count)."""
    m = mask.float()
    _, t = _counts(mask, num_seqs, num_tokens)
    return m / t


@register("token_mean_local", "token mean within each micro-batch, micro-batches weighted by their share",
          ref="TRL 'grpo' default", requires=("num_seqs", "num_tokens"))
def token_mean_local(mask: Tensor, num_seqs: float | None = None, num_tokens: float | None = None) -> Tensor:
    """loss = (n_micro / num_seqs) * sum l m / sum m, normalizing by the micro-batch's own token count."""
    m = mask.float()
    n, _ = _counts(mask, num_seqs, num_tokens)
    local = float((m.sum(1) > 0).sum())
    return m / m.sum().clamp(min=1) * (local / n)


@register("dr_grpo", "constant normalizer sum l m / (N * T_max)", ref="Dr. GRPO", requires=("num_samples",))
def dr_grpo(mask: Tensor, num_samples: float | None = None, max_len: int | None = None) -> Tensor:
    """loss = sum l m / (N * max_len); N counts every sample (masked ones too), max_len defaults to T."""
    m = mask.float()
    n = float(mask.shape[0]) if num_samples is None else num_samples
    return m / (max(n, 1.0) * float(max_len or mask.shape[1]))


def weights(mask: Tensor, mode: str, **params) -> Tensor:
    """The [N, T] weights of `mode`; `params` holds its declared inputs and its own parameters."""
    from .inputs import NAMES

    entry = AGGREGATIONS.entry(mode)
    allowed = set(entry.requires) | set(entry.params or ())
    unknown = sorted(set(params) - allowed - set(NAMES))     # inputs another mode declares are not errors
    if unknown:
        raise TypeError(f"aggregation {mode!r} takes {sorted(allowed)}; got unknown {unknown}")
    return entry.obj(mask, **{k: v for k, v in params.items() if k in allowed})


def aggregate(loss: Tensor, mask: Tensor, mode: str = "seq_mean", **params) -> Tensor:
    """Scalar loss from per-position `loss` [N, T] and `mask` [N, T] with the named mode."""
    w = weights(mask, mode, **params).to(loss.dtype)
    return torch.where(mask.bool(), loss * w, torch.zeros_like(loss)).sum()
