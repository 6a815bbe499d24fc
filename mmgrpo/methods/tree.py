"""Prefix trees over a group's token sequences (TEMPO's Prefix-to-Tree, S6), vectorized per position.

Node ids name prefixes: two samples of the same group share the node at position t iff their tokens up to and
including t are equal. Every position's token is part of the prefix (a masked tool output still shapes the
state); the mask only says where TD credit is given. `V(node)` is the mean reward of the samples that pass
through the node.
"""

from __future__ import annotations

import torch
from torch import Tensor


def prefix_nodes(group_ids: Tensor, token_ids: Tensor) -> tuple[Tensor, Tensor, int]:
    """(node [N, T], parent [N, T], number of nodes): the prefix node reached at each position and its parent.

    Roots (the empty prefix of each group) are nodes 0..K-1; one `unique` over (parent, token) per position.
    """
    n, t = token_ids.shape
    _, cur = torch.unique(group_ids, return_inverse=True)                        # [N] root of each sample
    count = int(cur.max()) + 1 if n else 0
    node = torch.empty((n, t), dtype=torch.long, device=token_ids.device)
    parent = torch.empty((n, t), dtype=torch.long, device=token_ids.device)
    for j in range(t):
        keys = torch.stack([cur, token_ids[:, j].long()], 1)                     # [N, 2]
        uniq, inv = torch.unique(keys, dim=0, return_inverse=True)
        parent[:, j] = cur
        cur = inv + count
        node[:, j] = cur
        count += uniq.shape[0]
    return node, parent, count


def node_values(node: Tensor, rewards: Tensor, group_ids: Tensor, count: int) -> Tensor:
    """[count] mean reward of the samples passing through each node (roots: the group mean), float64."""
    total = torch.zeros(count, dtype=torch.float64, device=rewards.device)
    visits = torch.zeros(count, dtype=torch.float64, device=rewards.device)
    n, t = node.shape
    r = rewards.double().unsqueeze(1).expand(n, t)
    total.index_add_(0, node.reshape(-1), r.reshape(-1))
    visits.index_add_(0, node.reshape(-1), torch.ones(n * t, dtype=torch.float64, device=rewards.device))
    _, root = torch.unique(group_ids, return_inverse=True)
    total.index_add_(0, root, rewards.double())
    visits.index_add_(0, root, torch.ones_like(rewards.double()))
    return total / visits.clamp(min=1)


def branch_td(group_ids: Tensor, token_ids: Tensor, mask: Tensor, rewards: Tensor) -> Tensor:
    """[N, T] TD term V(prefix_t) - V(prefix_{t-1}) of every valid position (0 where masked).

    It is exactly zero wherever the parent prefix has a single child (both hold the same samples), so only
    branching tokens get credit beyond the sequence's outcome.
    """
    node, parent, count = prefix_nodes(group_ids, token_ids)
    v = node_values(node, rewards, group_ids, count)                                 # [count]
    td = torch.where(mask.bool(), v[node] - v[parent], torch.zeros((), dtype=torch.float64))
    return td.to(rewards.dtype)
