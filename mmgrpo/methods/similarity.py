"""Pairwise similarities of samples for set-level diversity (S30 SGRPO), by name: `fn(token_ids, mask) -> [n, n]`.

Register your own with `SIMILARITIES.register("name", "description")`; values must lie in [0, 1] with 1 on
the diagonal for identical samples.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..registry import Registry

SIMILARITIES: Registry = Registry("similarity")


@SIMILARITIES.register("token_match", "fraction of positions (valid in either) holding the same token")
def token_match(token_ids: Tensor, mask: Tensor) -> Tensor:
    """sim(a, b) = #{t : both valid and a_t = b_t} / #{t : a or b valid}; two empty samples are identical.

    Use when: position matters (sequences, layouts, codec tokens of the same length).
    """
    m = mask.bool()
    same = (token_ids[:, None, :] == token_ids[None, :, :]) & m[:, None, :] & m[None, :, :]   # [n, n, T]
    union = (m[:, None, :] | m[None, :, :]).sum(-1)                                           # [n, n]
    sim = same.sum(-1).double() / union.clamp(min=1).double()
    return torch.where(union > 0, sim, torch.ones_like(sim))


@SIMILARITIES.register("jaccard", "Jaccard index of the sets of tokens two samples use (order-free)")
def jaccard(token_ids: Tensor, mask: Tensor) -> Tensor:
    """sim(a, b) = |set(a) & set(b)| / |set(a) | set(b)| over valid tokens; two empty samples are identical.

    Use when: what is used matters more than where (sets of items, molecules' fragments, vocabularies).
    """
    m = mask.bool()
    vocab = int(token_ids[m].max()) + 1 if m.any() else 1
    onehot = torch.zeros(token_ids.shape[0], vocab, dtype=torch.float64, device=token_ids.device)
    rows = torch.arange(token_ids.shape[0], device=token_ids.device).unsqueeze(1).expand_as(token_ids)
    onehot[rows[m], token_ids[m].long()] = 1.0                                               # [n, V] sets
    inter = onehot @ onehot.T
    union = onehot.sum(1, keepdim=True) + onehot.sum(1)[None] - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter))
