"""Random masks of the likelihood estimators: per-sample generators, exact-count subsets, quadrature nodes.

Every draw of sample i comes from its own generator, seeded from (the sample's seed, a salt): the masks a
sample sees never depend on which other samples share its minibatch, and one salt gives old, reference and
current log-probs the same masks.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from mmgrpo.groups import derive_seed


def sample_generators(seeds: Tensor, salt: int) -> list[torch.Generator]:
    """One CPU generator per sample from ([N] sample seeds, salt)."""
    return [torch.Generator().manual_seed(derive_seed(int(s), salt, 0x4D44)) for s in seeds.tolist()]


def salt_of(generator: torch.Generator | None) -> int:
    """The salt a trainer generator stands for (read, not consumed, so the same generator object can serve the
    current and the reference pass): the trainer's `PassGenerator.chunk_seed`, shared by every micro-batch of
    the step and chunk, so recomputed old log-probs and shuffled update passes see the same masks; for a plain
    generator its seed."""
    if generator is None:
        return 0
    return int(getattr(generator, "chunk_seed", generator.initial_seed()))


def exact_count_masks(gens: list[torch.Generator], length: int, counts: Tensor) -> Tensor:
    """[N] counts k_i -> [N, length] bool masks with exactly k_i True positions, uniform over subsets."""
    rows = []
    for g, k in zip(gens, counts.tolist()):
        perm = torch.randperm(length, generator=g)
        row = torch.zeros(length, dtype=torch.bool)
        row[perm[:int(k)]] = True
        rows.append(row)
    return torch.stack(rows) if rows else torch.zeros(0, length, dtype=torch.bool)


def bernoulli_masks(gens: list[torch.Generator], length: int, p: float) -> Tensor:
    """[N, length] bool masks, each position True with probability p (d1's prompt masking)."""
    rows = [torch.rand(length, generator=g) < p for g in gens]
    return torch.stack(rows) if rows else torch.zeros(0, length, dtype=torch.bool)


def uniform_ratios(gens: list[torch.Generator], low: float, high: float) -> Tensor:
    """[N] mask ratios t ~ U(low, high), one per sample."""
    return torch.stack([low + (high - low) * torch.rand((), generator=g) for g in gens]) if gens else torch.zeros(0)


def coupled_masks(gens: list[torch.Generator], length: int, low: float, high: float) -> tuple[Tensor, Tensor]:
    """Coupled-GRPO's pair (M, not M): M masks exactly round(t * length) positions, t ~ U(low, high).

    Returns ([N, length] bool M, [N] t). Every position is masked in exactly one of M and its complement.
    """
    t = uniform_ratios(gens, low, high)                                            # [N]
    counts = torch.round(t * length).long().clamp(0, length)
    return exact_count_masks(gens, length, counts), t


def gauss_legendre(n: int) -> tuple[Tensor, Tensor]:
    """Gauss-Legendre nodes and weights on [0, 1] (n nodes; the weights sum to 1), fp64."""
    if n < 1:
        raise ValueError(f"estimator nodes must be >= 1, got {n}")
    x, w = np.polynomial.legendre.leggauss(n)                  # on [-1, 1], weights sum to 2
    return torch.from_numpy((x + 1) / 2), torch.from_numpy(w / 2)


def node_counts(nodes: Tensor, length: int) -> Tensor:
    """Positions masked at each node: exactly round(t * length), at least 1 (a node masking nothing scores
    nothing and would only bias the sum), at most length (GDPO's semi-deterministic ELBO)."""
    return torch.round(nodes * length).long().clamp(1, length)
