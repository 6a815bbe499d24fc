"""The tiny token world: a pure-torch autoregressive policy and a verifiable reward, for proving that
the core loop learns (and for testing every method) in seconds on a CPU, without any modality package.

Task: given a condition c in [0, num_conds), emit `length` tokens from a vocabulary of `vocab`; the
target at position t is (c + stride * t) mod vocab. Chance reward (partial credit) is 1 / vocab.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mmgrpo.rollout import Rollout, SampleBatch


def target_tokens(conds: Tensor, length: int, vocab: int, stride: int) -> Tensor:
    """[N] conditions -> [N, length] target tokens (c + stride * t) mod vocab."""
    t = torch.arange(length)
    return (conds.unsqueeze(1) + stride * t) % vocab


def parse_conds(conds: list, num_conds: int) -> Tensor:
    try:
        c = torch.tensor([int(x) for x in conds], dtype=torch.long)
    except (TypeError, ValueError):
        raise ValueError(f"toy_tokens conditions must be integers 0..{num_conds - 1}, got {conds[:4]}...") from None
    if c.numel() and (c.min() < 0 or c.max() >= num_conds):
        raise ValueError(f"toy_tokens conditions must lie in 0..{num_conds - 1}, got {c.min().item()}..{c.max().item()}")
    return c


class ToyTokenPolicy(nn.Module):
    """Autoregressive MLP over (condition, position, previous token) -> next-token logits."""

    provides = ("entropy", "token_ids", "seq_log_likelihood")   # optional Rollout fields it fills

    @dataclass
    class Config:
        vocab: int = 8  # vocabulary size (chance reward = 1 / vocab)
        length: int = 4  # tokens per sample (positions on the time axis)
        num_conds: int = 8  # number of distinct conditions (prompts "0".."num_conds-1")
        hidden: int = 64  # MLP width
        stride: int = 3  # the target rule's stride (used by the reward; kept here for one source of truth)
        time_chunk: int | None = None  # positions per backward pass (None = all)

    def __init__(self, cfg: "ToyTokenPolicy.Config | None" = None, device: torch.device | str | None = None):
        super().__init__()
        self.cfg = cfg = cfg or ToyTokenPolicy.Config()
        self.time_chunk = cfg.time_chunk
        self.cond_emb = nn.Embedding(cfg.num_conds, cfg.hidden)
        self.pos_emb = nn.Embedding(cfg.length, cfg.hidden)
        self.tok_emb = nn.Embedding(cfg.vocab + 1, cfg.hidden)          # + BOS
        self.mlp = nn.Sequential(nn.Linear(cfg.hidden, cfg.hidden), nn.GELU(), nn.Linear(cfg.hidden, cfg.vocab))
        for emb in (self.cond_emb, self.pos_emb, self.tok_emb):
            nn.init.normal_(emb.weight, std=0.5)     # small sums: the MLP starts near its linear regime
        self.to(device or "cpu")
        self.reference = None
        self.freeze_reference()

    @property
    def device(self) -> torch.device:
        return self.cond_emb.weight.device

    def _logits(self, conds: Tensor, prev: Tensor, pos: Tensor, module: "ToyTokenPolicy | None" = None) -> Tensor:
        m = module or self
        h = m.cond_emb(conds)[:, None] + m.pos_emb(pos)[None] + m.tok_emb(prev)   # [N, t, H]
        return m.mlp(h)                                                            # [N, t, V]

    def _teacher_forced(self, conds: Tensor, tokens: Tensor, positions: slice, module=None) -> Tensor:
        bos = torch.full_like(tokens[:, :1], self.cfg.vocab)
        prev = torch.cat([bos, tokens[:, :-1]], 1)[:, positions]                  # [N, c]
        pos = torch.arange(self.cfg.length, device=tokens.device)[positions]
        logits = self._logits(conds, prev, pos, module)
        return torch.log_softmax(logits.float(), -1).gather(-1, tokens[:, positions, None]).squeeze(-1)

    @torch.no_grad()
    def sample(self, batch: SampleBatch) -> Rollout:
        cfg, dev = self.cfg, self.device
        conds = parse_conds(batch.conds, cfg.num_conds).to(dev)
        n = len(batch)
        # per-sample uniforms: a sample never depends on its batch neighbours or its rank
        u = torch.stack([torch.rand(cfg.length, generator=torch.Generator().manual_seed(int(s)))
                         for s in batch.seeds]).to(dev) if n else torch.zeros(0, cfg.length, device=dev)
        tokens = torch.zeros(n, cfg.length, dtype=torch.long, device=dev)
        logps = torch.zeros(n, cfg.length, device=dev)
        ent = torch.zeros(n, cfg.length, device=dev)
        prev = torch.full((n,), cfg.vocab, dtype=torch.long, device=dev)
        for t in range(cfg.length):
            logits = self._logits(conds, prev[:, None], torch.tensor([t], device=dev))[:, 0].float()
            logp = torch.log_softmax(logits, -1)                                    # [N, V]
            cdf = logp.exp().cumsum(-1)
            tok = torch.searchsorted(cdf, u[:, t:t + 1].clamp(max=cdf[:, -1:] - 1e-7)).squeeze(1)
            tokens[:, t] = tok
            logps[:, t] = logp.gather(1, tok[:, None]).squeeze(1)
            ent[:, t] = -(logp.exp() * logp).sum(-1)
            prev = tok
        return Rollout(group_ids=batch.group_ids, log_probs=logps.cpu(),
                       mask=torch.ones(n, cfg.length, dtype=torch.bool), outputs=tokens.cpu(),
                       conds=list(batch.conds), state={"conds": conds.cpu(), "tokens": tokens.cpu()},
                       entropy=ent.cpu(), token_ids=tokens.cpu(), seq_log_likelihood=logps.sum(1).cpu())

    def log_prob(self, rollout: Rollout, positions: slice) -> Tensor:
        st = rollout.state
        return self._teacher_forced(st["conds"].to(self.device), st["tokens"].to(self.device), positions)

    def ref_log_prob(self, rollout: Rollout, positions: slice) -> Tensor:
        """Log-probs under the initial weights (the reference policy of the KL term)."""
        if self.reference is None:
            raise RuntimeError("toy_tokens: reference weights were not frozen; call freeze_reference() first")
        st = rollout.state
        with torch.no_grad():
            return self._teacher_forced(st["conds"].to(self.device), st["tokens"].to(self.device), positions,
                                        self.reference)

    def freeze_reference(self) -> None:
        """Keep a frozen copy of the current weights as the KL reference (outside the module tree)."""
        ref = copy.deepcopy(self).requires_grad_(False)
        object.__setattr__(self, "reference", ref)   # not a submodule: never trained, never saved

    def trainable_parameters(self):
        return list(self.parameters())

    def state_dict_trainable(self) -> dict[str, Tensor]:
        return dict(self.state_dict())

    def load_state_dict_trainable(self, sd: dict[str, Tensor]) -> None:
        self.load_state_dict(sd)


class ToyMatchReward:
    """Fraction of positions matching the target rule (partial) or 1 if all match (strict)."""

    name = "toy_match"

    @dataclass
    class Config:
        vocab: int = 8  # must equal the policy's vocab
        stride: int = 3  # must equal the policy's stride
        num_conds: int = 8  # must equal the policy's num_conds
        mode: str = "partial"  # partial: fraction of correct tokens; strict: 1 only if all are correct

        def __post_init__(self) -> None:
            if self.mode not in ("partial", "strict"):
                raise ValueError(f"mode must be 'partial' or 'strict', got {self.mode!r}")

    def __init__(self, cfg: "ToyMatchReward.Config | None" = None):
        self.cfg = cfg or ToyMatchReward.Config()

    def __call__(self, outputs: Tensor, conds: list, **_) -> Tensor:
        c = parse_conds(conds, self.cfg.num_conds)
        target = target_tokens(c, outputs.shape[1], self.cfg.vocab, self.cfg.stride)
        hit = (outputs.cpu() == target).float()
        return hit.mean(1) if self.cfg.mode == "partial" else hit.min(1).values
