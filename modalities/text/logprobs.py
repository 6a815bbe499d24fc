"""Token log-probs of completions under a causal LM: the naive per-sample forward and the shared-prefix one.

Shared prefix (Prefix Grouper, S26): members of a group share one prompt; the prompt is encoded once (one
forward producing past key/values, with gradient, and the logits of its last position only), the cache is
repeated for the members, and their completions attend to it. Log-probs and gradients equal the naive forward
of [prompt; completion] per member. Measured in `benchmarks/prefix_sharing.py` (docs/text.md).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .processing import token_log_probs


def naive_log_probs(model: nn.Module, prompt: Tensor, prompt_attn: Tensor, completion: Tensor,
                    **proc) -> tuple[Tensor, Tensor]:
    """prompt [n, P] (left-padded), prompt_attn [n, P], completion [n, L] -> (logp [n, L], entropy [n, L])."""
    p = prompt.shape[1]
    ids = torch.cat([prompt, completion], 1)                                  # [n, P+L]
    attn = torch.cat([prompt_attn.long(), torch.ones_like(completion)], 1)    # [n, P+L]
    pos = (attn.cumsum(1) - 1).clamp(min=0)                                   # left padding: first real token at 0
    logits = model(input_ids=ids, attention_mask=attn, position_ids=pos).logits  # [n, P+L, V]
    return token_log_probs(logits[:, p - 1:-1], completion, **proc)


def shared_prefix_log_probs(model: nn.Module, prompt: Tensor, prompt_attn: Tensor, completion: Tensor,
                            group_ids: Tensor, **proc) -> tuple[Tensor, Tensor]:
    """Same result as `naive_log_probs`, encoding each group's prompt once (members must share the prompt)."""
    from transformers import DynamicCache

    n, length = completion.shape
    logp = torch.empty(n, length, device=completion.device)
    ent = torch.empty(n, length, device=completion.device)
    for g in group_ids.unique().tolist():
        rows = (group_ids == g).nonzero().squeeze(1)                          # [G]
        pr, pa = prompt[rows[:1]], prompt_attn[rows[:1]].long()               # [1, P]
        if not (prompt[rows] == pr).all() or not (prompt_attn[rows].long() == pa).all():
            raise ValueError(f"policy.share_prefix: members of group {g} have different prompts")
        keep = pa[0].bool()
        pr, pa = pr[:, keep], pa[:, keep]                                     # drop the group's padding
        p = pr.shape[1]
        cache = DynamicCache()
        out = model(input_ids=pr, attention_mask=pa, position_ids=torch.arange(p, device=pr.device)[None],
                    past_key_values=cache, use_cache=True, logits_to_keep=1)  # only the last position's logits
        last = out.logits[:, -1:].expand(len(rows), 1, -1)                    # [G, 1, V] predicts token 0
        cache.batch_repeat_interleave(len(rows))
        comp = completion[rows]                                               # [G, L]
        attn = torch.ones(len(rows), p + length, dtype=torch.long, device=comp.device)
        pos = torch.arange(p, p + length, device=comp.device)[None].expand(len(rows), -1)
        rest = model(input_ids=comp[:, :-1], attention_mask=attn[:, :-1], position_ids=pos[:, :-1],
                     past_key_values=cache, use_cache=True).logits            # [G, L-1, V]
        lp, en = token_log_probs(torch.cat([last, rest], 1), comp, **proc)
        logp[rows], ent[rows] = lp, en
    return logp, ent
