"""Logit processing shared by sampling and the training log-prob: temperature, then top-k, then top-p.

The same function runs in `sample` and in `log_prob`, so a sampled token's recorded log-prob is its
log-prob under exactly the distribution that is trained (the replay contract). Masked tokens get -inf.
"""

from __future__ import annotations

import torch
from torch import Tensor


def process_logits(logits: Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """[..., V] raw logits -> [..., V] fp32 processed logits (temperature, top-k, top-p nucleus)."""
    x = logits.float() / temperature                                      # [..., V]
    if top_k and top_k < x.shape[-1]:
        kth = x.topk(top_k, dim=-1).values[..., -1:]                      # [..., 1]
        x = x.masked_fill(x < kth, -torch.inf)
    if top_p < 1.0:
        srt, idx = x.sort(dim=-1, descending=True)                        # [..., V]
        probs = srt.softmax(-1).detach()
        drop = probs.cumsum(-1) - probs > top_p                           # keep the smallest set reaching top_p
        x = x.masked_fill(torch.zeros_like(drop).scatter(-1, idx, drop), -torch.inf)
    return x


def token_log_probs(logits: Tensor, tokens: Tensor, **proc) -> tuple[Tensor, Tensor]:
    """Processed log-probs of `tokens` [...] under `logits` [..., V] and the entropy [...] of that distribution."""
    logp = process_logits(logits, **proc).log_softmax(-1)                 # [..., V]
    p = logp.exp()
    entropy = -(p * logp.masked_fill(p == 0, 0.0)).sum(-1)                # [...]
    return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1), entropy
