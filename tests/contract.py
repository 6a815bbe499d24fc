"""The shared adapter contract: replaying a fresh rollout reproduces its recorded log-probs (ratio 1).

Any adapter test can call `check_replay(policy, batch, splits)`: right after `sample()`, in train mode,
`log_prob()` on the same rollout (sampled in eval mode, replayed in train mode, as the trainer does), cut into minibatches of every size in `splits` (shuffled) and into time
chunks (the policy's own `time_chunk` and single positions), must give back the recorded log-probs, so the
first PPO/GRPO ratio is exactly 1 whatever the trainer's minibatching.
"""

from __future__ import annotations

import torch


def check_replay(policy, batch, splits, time_chunks=None, tol: float = 1e-5, seed: int = 0):
    """Sample `batch`, then assert `|exp(logp - old) - 1| <= tol` on every masked position for every
    minibatch size in `splits` and every time chunk in `time_chunks` (default: policy.time_chunk and 1).

    Returns the rollout (for further checks). Log-probs are recomputed with autograd on, as in training.
    """
    if hasattr(policy, "eval"):
        policy.eval()
    with torch.no_grad():
        rollout = policy.sample(batch)
    if hasattr(policy, "train"):
        policy.train()
    n, t = rollout.log_probs.shape
    assert n == len(batch), f"rollout has {n} samples for a batch of {len(batch)}"
    assert rollout.mask.any(), "rollout has no trainable positions to check"
    chunks = time_chunks or sorted({c for c in (policy.time_chunk or t, 1) if c})
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    for size in splits:
        for chunk in chunks:
            for mb_idx in perm.split(size):
                mb = rollout.select(mb_idx)
                for start in range(0, t, chunk):
                    pos = slice(start, min(start + chunk, t))
                    logp = policy.log_prob(mb, pos).log_probs
                    assert logp.shape == (len(mb_idx), pos.stop - pos.start), (
                        f"log_prob returned {tuple(logp.shape)} for {len(mb_idx)} samples x positions {pos}"
                    )
                    ratio = torch.exp(logp.detach().float() - mb.log_probs[:, pos].float())
                    err = (ratio - 1).abs()[mb.mask[:, pos]]
                    worst = float(err.max()) if err.numel() else 0.0
                    assert worst <= tol, (
                        f"replay ratio off by {worst:.3g} > {tol} (minibatch size {size}, samples "
                        f"{mb_idx.tolist()}, positions {pos})"
                    )
    return rollout
