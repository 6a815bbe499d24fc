"""Prefix trees over a group's token sequences (TEMPO's Prefix-to-Tree, S6), vectorized per position.

Node ids name prefixes: two samples of the same group share the node at position t iff their valid tokens up
to and including t are equal. `V(node)` is the mean reward of the samples that pass through the node.
"""

from __future__ import annotations

import torch
from torch import Tensor


def prefix_nodes(group_ids: Tensor, token_ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, int]:
    """(node [N, T], parent [N, T], number of nodes) of every valid position; -1 where masked.

    Roots (the empty prefix of each group) are nodes 0..K-1. A masked position does not advance the path, so
    `parent` at the next valid position is the last node reached.
    """
    n, t = token_ids.shape
    m = mask.bool()
    _, cur = torch.unique(group_ids, return_inverse=True)                        # [N] root of each sample
    count = int(cur.max()) + 1 if n else 0
    node = torch.full((n, t), -1, dtype=torch.long, device=token_ids.device)
    parent = torch.full((n, t), -1, dtype=torch.long, device=token_ids.device)
    for j in range(t):
        live = m[:, j]
        if not live.any():
            continue
        keys = torch.stack([cur[live], token_ids[live, j].long()], 1)          # [n_live, 2]
        uniq, inv = torch.unique(keys, dim=0, return_inverse=True)
        new = inv + count
        count += uniq.shape[0]
        parent[live, j] = cur[live]
        node[live, j] = new
        cur = cur.clone()
        cur[live] = new
    return node, parent, count


def node_values(node: Tensor, parent: Tensor, rewards: Tensor, group_ids: Tensor, count: int) -> Tensor:
    """[count] mean reward of the samples passing through each node (roots: the group mean), float64."""
    total = torch.zeros(count, dtype=torch.float64, device=rewards.device)
    visits = torch.zeros(count, dtype=torch.float64, device=rewards.device)
    n, t = node.shape
    r = rewards.double().unsqueeze(1).expand(n, t)
    valid = node >= 0
    total.index_add_(0, node[valid], r[valid])
    visits.index_add_(0, node[valid], torch.ones_like(r[valid]))
    _, root = torch.unique(group_ids, return_inverse=True)
    total.index_add_(0, root, rewards.double())
    visits.index_add_(0, root, torch.ones_like(rewards.double()))
    return total / visits.clamp(min=1)


def branch_td(group_ids: Tensor, token_ids: Tensor, mask: Tensor, rewards: Tensor) -> Tensor:
    """[N, T] TD term V(prefix_t) - V(prefix_{t-1}) of every valid position (0 where masked).

    It is exactly zero wherever the parent prefix has a single child (both hold the same samples), so only
    branching tokens get credit beyond the sequence's outcome.
    """
    node, parent, count = prefix_nodes(group_ids, token_ids, mask)
    v = node_values(node, parent, rewards, group_ids, count)                         # [count]
    valid = node >= 0
    td = torch.zeros(node.shape, dtype=torch.float64, device=rewards.device)
    td[valid] = v[node[valid]] - v[parent[valid]]
    return td.to(rewards.dtype)
