"""Block-wise low-confidence remasking (LLaDA's sampler), recording each token's decoding step and log-prob.

The completion starts fully masked and is decoded block by block, left to right. Within a block, each step
draws a token for every masked position from the tempered denoiser, commits the `k` most confident ones
(their probability; or random ones with `remasking="random"`) and leaves the rest masked. A committed token
keeps its value and log-prob: that log-prob, log p_T(y_i | the sequence at its step), is what the TraceRL
estimator replays and, with block length 1, what the AR-order estimator recomputes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

REMASKING = ("low_confidence", "random")


def transfer_counts(block_length: int, steps: int) -> list[int]:
    """Tokens committed at each of a block's `steps` steps: as equal as possible, the remainder first."""
    base, extra = divmod(block_length, steps)
    return [base + (1 if s < extra else 0) for s in range(steps)]


@dataclass(frozen=True)
class Schedule:
    """How a completion of `gen_length` tokens is decoded: blocks of `block_length`, `steps` in all."""

    gen_length: int
    block_length: int
    steps: int

    def __post_init__(self) -> None:
        if self.gen_length < 1 or self.block_length < 1 or self.steps < 1:
            raise ValueError(f"gen_length, block_length, steps must be >= 1, got {self.gen_length}, "
                             f"{self.block_length}, {self.steps}")
        if self.gen_length % self.block_length:
            raise ValueError(f"gen_length={self.gen_length} must be a multiple of block_length={self.block_length}")
        blocks = self.gen_length // self.block_length
        if self.steps % blocks or self.steps // blocks > self.block_length:
            raise ValueError(f"steps={self.steps} must be a multiple of the {blocks} blocks with at most "
                             f"block_length={self.block_length} steps per block")

    @property
    def blocks(self) -> int:
        return self.gen_length // self.block_length

    @property
    def steps_per_block(self) -> int:
        return self.steps // self.blocks


@torch.no_grad()
def generate(forward: Callable[[Tensor, Tensor], Tensor], prompt: Tensor, prompt_attn: Tensor, sched: Schedule,
             mask_id: int, gens: list[torch.Generator], temperature: float = 1.0,
             remasking: str = "low_confidence") -> tuple[Tensor, Tensor, Tensor]:
    """Decode completions for [n, P] prompts. Returns ([n, L] ids, [n, L] log-probs, [n, L] decoding steps).

    `forward([B, S] ids, [B, S] attention) -> [B, S, V]` aligned logits; `gens`: one generator per sample
    (its uniforms decide its tokens, so a sample never depends on its batch neighbours).
    """
    if remasking not in REMASKING:
        raise ValueError(f"remasking must be one of {REMASKING}, got {remasking!r}")
    n, length, dev = prompt.shape[0], sched.gen_length, prompt.device
    comp = torch.full((n, length), mask_id, dtype=torch.long, device=dev)
    logps = torch.zeros(n, length, device=dev)
    order = torch.full((n, length), -1, dtype=torch.long, device=dev)
    attn = torch.cat([prompt_attn, torch.ones(n, length, dtype=torch.bool, device=dev)], 1)
    step = 0
    for b in range(sched.blocks):
        lo, hi = b * sched.block_length, (b + 1) * sched.block_length
        for k in transfer_counts(sched.block_length, sched.steps_per_block):
            u = torch.stack([torch.rand(2, length, generator=g) for g in gens]).to(dev) if n else \
                torch.zeros(0, 2, length, device=dev)                                  # [n, 2, L]
            logits = forward(torch.cat([prompt, comp], 1), attn)[:, -length:] / temperature   # [n, L, V]
            logp = torch.log_softmax(logits.float(), -1)
            cdf = logp.exp().cumsum(-1)
            tok = torch.searchsorted(cdf, u[:, 0, :, None].clamp(max=cdf[..., -1:] - 1e-7)).squeeze(-1)
            tok = tok.clamp(max=logp.shape[-1] - 1)                                    # [n, L]
            tok_logp = logp.gather(-1, tok[..., None]).squeeze(-1)                     # [n, L]
            conf = tok_logp if remasking == "low_confidence" else u[:, 1]
            open_ = order < 0
            open_[:, :lo] = False
            open_[:, hi:] = False
            conf = torch.where(open_, conf, torch.full_like(conf, -torch.inf))
            pick = conf.topk(k, dim=1).indices                                        # [n, k]
            chosen = torch.zeros_like(open_).scatter_(1, pick, True) & open_
            comp = torch.where(chosen, tok, comp)
            logps = torch.where(chosen, tok_logp, logps)
            order = torch.where(chosen, torch.full_like(order, step), order)
            step += 1
    return comp, logps, order
