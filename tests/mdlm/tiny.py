"""Shared builders of the mdlm tests: a tiny policy with a sharp random denoiser and hand-made rollouts."""

from __future__ import annotations

import itertools

import torch

from mmgrpo.modalities.mdlm.models import TinyBertConfig
from mmgrpo.modalities.mdlm.policy import MDLMPolicy
from mmgrpo.modalities.mdlm.vocab import MASK
from mmgrpo.rollout import Rollout, SampleBatch


def tiny_policy(**kw) -> MDLMPolicy:
    """Alphabet "ab", sharp random weights (init_std 0.5) so that context changes the predictions."""
    base = dict(alphabet="ab", gen_length=4, block_length=4, steps=4, lora_rank=2,
                model=TinyBertConfig(hidden=16, layers=2, heads=2, intermediate=32, max_positions=16, init_std=0.5))
    base.update(kw)
    return MDLMPolicy(MDLMPolicy.Config(**base))


def batch(conds, seed0: int = 100) -> SampleBatch:
    n = len(conds)
    return SampleBatch(conds=list(conds), group_ids=torch.arange(n), seeds=torch.arange(seed0, seed0 + n),
                       group_seeds=torch.arange(n))


def all_completions(policy) -> torch.Tensor:
    """[V^L, L] every completion over the alphabet (ids 2.. are the characters)."""
    v, length = len(policy.cfg.alphabet), policy.cfg.gen_length
    return torch.tensor(list(itertools.product(range(2, 2 + v), repeat=length)))


def rollout_of(policy, prompt: str, completions: torch.Tensor, order: torch.Tensor | None = None) -> Rollout:
    """A rollout holding the given completions after one prompt (order: left to right unless given)."""
    n, length = completions.shape
    ids, attn = policy.vocab.encode([prompt] * n)
    order = order if order is not None else torch.arange(length).expand(n, -1).clone()
    state = {"prompt": ids, "prompt_attn": attn, "completion": completions, "order": order,
             "seeds": torch.arange(n) + 7}
    return Rollout(group_ids=torch.arange(n), log_probs=torch.zeros(n, length), mask=torch.ones(n, length, dtype=torch.bool),
                   outputs=policy.vocab.decode(completions), conds=[prompt] * n, state=state)


@torch.no_grad()
def conditional(policy, prompt: str, y: torch.Tensor, masked: list[int]) -> torch.Tensor:
    """[len(masked)] log p(y_i | y with positions `masked` replaced by MASK), one forward (loop reference)."""
    ids, attn = policy.vocab.encode([prompt])
    comp = y.clone()
    comp[masked] = MASK
    full = torch.cat([ids[0], comp])[None]
    att = torch.cat([attn[0], torch.ones(len(y), dtype=torch.bool)])[None]
    logp = torch.log_softmax(policy._forward(full, att)[0, ids.shape[1]:] / policy.cfg.temperature, -1)
    return torch.stack([logp[i, y[i]] for i in masked]) if masked else torch.zeros(0)
