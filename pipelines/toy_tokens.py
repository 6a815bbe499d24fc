"""The tiny token world: a pure-torch autoregressive policy and a verifiable reward, for proving that
the core loop learns (and for testing every method) in seconds on a CPU, without any modality package.

Task: given a condition c in [0, num_conds), emit `length` tokens from a vocabulary of `vocab`; the
target at position t is (c + stride * t) mod vocab. Chance reward (partial credit) is 1 / vocab.

So that every method of the catalog runs end to end, the policy also fills the optional rollout fields
(segment ids of `segment_len` tokens, a stratum id, segment values from an answer-probability probe,
token flags from an exact "process reward model"), can stop early on `stop_token` (variable lengths),
and has the `perturb_conditions` hook: a condition "c|p" is c with a task-irrelevant perturbation p
added to its embedding (S40 LoPE's nonsense prefix, in miniature); the reward reads only c.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mmgrpo.policy import PolicyBase, StepOutput
from mmgrpo.rollout import Rollout, SampleBatch
from mmgrpo.schema import bounded


def target_tokens(conds: Tensor, length: int, vocab: int, stride: int) -> Tensor:
    """[N] conditions -> [N, length] target tokens (c + stride * t) mod vocab."""
    t = torch.arange(length)
    return (conds.unsqueeze(1) + stride * t) % vocab


def split_cond(x) -> tuple[int, int | None]:
    """"c" -> (c, None); "c|p" (a perturbed condition, see `ToyTokenPolicy.perturb_conditions`) -> (c, p)."""
    base, sep, pert = str(x).partition("|")
    return int(base), (int(pert) if sep else None)


def parse_conds(conds: list, num_conds: int) -> Tensor:
    try:
        c = torch.tensor([split_cond(x)[0] for x in conds], dtype=torch.long)
    except (TypeError, ValueError):
        raise ValueError(f"toy_tokens conditions must be integers 0..{num_conds - 1}, got {conds[:4]}...") from None
    if c.numel() and (c.min() < 0 or c.max() >= num_conds):
        raise ValueError(f"toy_tokens conditions must lie in 0..{num_conds - 1}, got {c.min().item()}..{c.max().item()}")
    return c


class ToyTokenNet(nn.Module):
    """Autoregressive MLP over (condition, position, previous token) -> next-token logits."""

    def __init__(self, num_conds: int, length: int, vocab: int, hidden: int):
        super().__init__()
        self.cond_emb = nn.Embedding(num_conds, hidden)
        self.pos_emb = nn.Embedding(length, hidden)
        self.tok_emb = nn.Embedding(vocab + 1, hidden)          # + BOS
        self.mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, vocab))
        for emb in (self.cond_emb, self.pos_emb, self.tok_emb):
            nn.init.normal_(emb.weight, std=0.5)     # small sums: the MLP starts near its linear regime

    def forward(self, conds: Tensor, prev: Tensor, pos: Tensor, pert: Tensor | None = None) -> Tensor:
        c = self.cond_emb(conds)
        if pert is not None:
            c = c + pert.to(c.dtype)                                               # perturbed conditions
        h = c[:, None] + self.pos_emb(pos)[None] + self.tok_emb(prev)              # [N, t, H]
        return self.mlp(h)                                                         # [N, t, V]


class ToyTokenPolicy(PolicyBase):
    """The token world's policy: a `ToyTokenNet`, its frozen initial copy as the KL reference."""

    # optional Rollout fields it fills (segment_values and token_flags travel in Rollout.extras)
    provides = ("entropy", "token_ids", "seq_log_likelihood", "segment_ids", "stratum_ids", "segment_values",
                "token_flags")

    @dataclass
    class Config:
        vocab: int = bounded(8, ge=2)  # vocabulary size (chance reward = 1 / vocab)
        length: int = bounded(4, ge=1)  # tokens per sample (positions on the time axis)
        num_conds: int = bounded(8, ge=1)  # number of distinct conditions (prompts "0".."num_conds-1")
        hidden: int = bounded(64, ge=1)  # MLP width
        stride: int = bounded(3, ge=0)  # the target rule's stride (used by the reward; kept here for one source of truth)
        time_chunk: int | None = bounded(None, ge=1)  # positions per backward pass (None = all)
        segment_len: int = bounded(2, ge=1)  # segment ids: position t lies in segment t // segment_len
        num_strata: int = bounded(2, ge=1)  # stratum id of a sample: its first token mod num_strata
        stop_token: int | None = bounded(None, ge=0)  # if set, sampling this token ends the sample (later positions masked)
        perturb_scale: float = bounded(1.0, ge=0)  # norm scale of the embedding offset of a perturbed condition "c|p"

        def __post_init__(self) -> None:
            if self.segment_len < 1 or self.num_strata < 1:
                raise ValueError(f"segment_len and num_strata must be >= 1, got {self.segment_len}, {self.num_strata}")
            if self.stop_token is not None and not 0 <= self.stop_token < self.vocab:
                raise ValueError(f"stop_token must lie in 0..{self.vocab - 1} or be null, got {self.stop_token}")

    def __init__(self, cfg: "ToyTokenPolicy.Config | None" = None, device: torch.device | str | None = None):
        self.cfg = cfg = cfg or ToyTokenPolicy.Config()
        self.time_chunk = cfg.time_chunk
        self.net = ToyTokenNet(cfg.num_conds, cfg.length, cfg.vocab, cfg.hidden).to(device or "cpu")
        self.ref_net = copy.deepcopy(self.net).requires_grad_(False)     # frozen initial weights: the reference
        self._use_reference = False

    def trainable_module(self) -> nn.Module:
        return self.net

    @property
    def device(self) -> torch.device:
        return self.net.cond_emb.weight.device

    def reference(self):
        """Log-probs inside this context come from the frozen initial weights."""
        import contextlib

        @contextlib.contextmanager
        def ctx():
            self._use_reference = True
            try:
                yield
            finally:
                self._use_reference = False

        return ctx()

    def _logits(self, conds: Tensor, prev: Tensor, pos: Tensor, pert: Tensor | None = None,
                train: bool = False) -> Tensor:
        if self._use_reference:
            return self.ref_net(conds, prev, pos, pert)
        return (self.forward_module if train else self.net)(conds, prev, pos, pert)

    def _teacher_forced(self, conds: Tensor, tokens: Tensor, positions: slice, pert: Tensor | None = None,
                        train: bool = False) -> Tensor:
        bos = torch.full_like(tokens[:, :1], self.cfg.vocab)
        prev = torch.cat([bos, tokens[:, :-1]], 1)[:, positions]                  # [N, c]
        pos = torch.arange(self.cfg.length, device=tokens.device)[positions]
        logits = self._logits(conds, prev, pos, pert, train=train)
        return torch.log_softmax(logits.float(), -1).gather(-1, tokens[:, positions, None]).squeeze(-1)

    def _perturbations(self, conds: list) -> Tensor:
        """[N, H] embedding offsets of perturbed conditions "c|p" (zero rows for plain ones: x + 0 is exact)."""
        perts = [split_cond(x)[1] for x in conds]
        h = self.cfg.hidden
        if all(p is None for p in perts):
            return torch.zeros(len(conds), h, device=self.device)
        rows = [torch.zeros(h) if p is None else
                torch.randn(h, generator=torch.Generator().manual_seed(p)) * (self.cfg.perturb_scale / h ** 0.5)
                for p in perts]
        return torch.stack(rows).to(self.device)

    def perturb_conditions(self, conds: list, seeds: Tensor) -> list:
        """The adapter hook of prompt-space perturbation (S40 LoPE): condition c becomes "c|p", p from `seeds`.

        The perturbation is task-irrelevant (the reward reads only c) and shifts the output distribution the
        way a random lorem-ipsum prefix shifts a language model's; the same seed gives the same perturbation.
        """
        return [f"{split_cond(c)[0]}|{int(s) % (2 ** 31 - 1)}" for c, s in zip(conds, seeds.tolist())]

    @torch.no_grad()
    def sample(self, batch: SampleBatch, evaluate: bool = False) -> Rollout:
        cfg, dev = self.cfg, self.device
        conds = parse_conds(batch.conds, cfg.num_conds).to(dev)
        n = len(batch)
        # per-sample uniforms: a sample never depends on its batch neighbours or its rank
        u = torch.stack([torch.rand(cfg.length, generator=torch.Generator().manual_seed(int(s)))
                         for s in batch.seeds]).to(dev) if n else torch.zeros(0, cfg.length, device=dev)
        tokens = torch.zeros(n, cfg.length, dtype=torch.long, device=dev)
        logps = torch.zeros(n, cfg.length, device=dev)
        ent = torch.zeros(n, cfg.length, device=dev)
        mask = torch.ones(n, cfg.length, dtype=torch.bool, device=dev)
        pert = self._perturbations(batch.conds)
        prev = torch.full((n,), cfg.vocab, dtype=torch.long, device=dev)
        for t in range(cfg.length):
            logits = self._logits(conds, prev[:, None], torch.tensor([t], device=dev), pert=pert)[:, 0].float()
            logp = torch.log_softmax(logits, -1)                                    # [N, V]
            cdf = logp.exp().cumsum(-1)
            tok = torch.searchsorted(cdf, u[:, t:t + 1].clamp(max=cdf[:, -1:] - 1e-7)).squeeze(1)
            tokens[:, t] = tok
            logps[:, t] = logp.gather(1, tok[:, None]).squeeze(1)
            ent[:, t] = -(logp.exp() * logp).sum(-1)
            prev = tok
            if cfg.stop_token is not None and t + 1 < cfg.length:              # stopped samples stay stopped
                mask[:, t + 1] = mask[:, t] & (tok != cfg.stop_token)
        outputs = torch.where(mask, tokens, torch.full_like(tokens, -1))       # -1: nothing emitted there
        target = target_tokens(conds, cfg.length, cfg.vocab, cfg.stride)       # [N, L]
        extras = {"segment_values": self._probe_values(conds, tokens, mask, target, pert).cpu(),
                  "token_flags": ((tokens != target) & mask).cpu()}
        pos = torch.arange(cfg.length, device=dev)
        return Rollout(group_ids=batch.group_ids, log_probs=logps.cpu(), mask=mask.cpu(), outputs=outputs.cpu(),
                       conds=list(batch.conds),
                       state={"conds": conds.cpu(), "tokens": tokens.cpu(),
                              "pert": pert.cpu()},
                       entropy=ent.cpu(), token_ids=tokens.cpu(),
                       seq_log_likelihood=(logps * mask).sum(1).cpu(),
                       segment_ids=(pos // cfg.segment_len).expand(n, -1).clone().cpu(),
                       stratum_ids=(tokens[:, 0] % cfg.num_strata).cpu(), extras=extras)

    def _probe_values(self, conds: Tensor, tokens: Tensor, mask: Tensor, target: Tensor,
                      pert: Tensor | None) -> Tensor:
        """[N, L] value estimate after each position (S46-style probe of the belief in the right answer).

        V_t = (correct tokens so far + sum over later positions s of pi(target_s | target_{s-1})) / L: the
        reward expected if the policy continued on the right path from here; no extra rollouts needed.
        Positions after a stop keep the value of the last emitted one.
        """
        length = self.cfg.length
        p_target = self._teacher_forced(conds, target, slice(0, length), pert=pert).exp()    # [N, L]
        hits = ((tokens == target) & mask).float().cumsum(1)                                 # [N, L]
        future = p_target.flip(1).cumsum(1).flip(1)                                          # sum_{s>=t}
        later = torch.cat([future[:, 1:], torch.zeros_like(future[:, :1])], 1)              # sum_{s>t}
        return (hits + later * mask.float()) / length     # after a stop: what was reached (hits stop growing)

    def _pert(self, rollout: Rollout) -> Tensor | None:
        p = rollout.state.get("pert")                       # absent in rollouts saved before the hook existed
        return p.to(self.device) if p is not None else None

    def log_prob(self, rollout: Rollout, positions: slice, generator: torch.Generator | None = None) -> StepOutput:
        st = rollout.state
        return StepOutput(self._teacher_forced(st["conds"].to(self.device), st["tokens"].to(self.device), positions,
                                               pert=self._pert(rollout), train=torch.is_grad_enabled()))



class ToyMatchReward:
    """Fraction of positions matching the target rule (partial) or 1 if all match (strict)."""

    name = "toy_match"

    @dataclass
    class Config:
        vocab: int = bounded(8, ge=2)  # must equal the policy's vocab
        stride: int = bounded(3, ge=0)  # must equal the policy's stride
        num_conds: int = bounded(8, ge=1)  # must equal the policy's num_conds
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


class ToyLengthReward:
    """Brevity: 1 - (emitted tokens) / length, for the length-aware methods (S19 GRPO-lambda, S44 budgets)."""

    name = "toy_length"

    @dataclass
    class Config:
        length: int = bounded(4, ge=1)  # must equal the policy's length

    def __init__(self, cfg: "ToyLengthReward.Config | None" = None):
        self.cfg = cfg or ToyLengthReward.Config()

    def __call__(self, outputs: Tensor, conds: list, **_) -> Tensor:
        emitted = (outputs.cpu() >= 0).float().sum(1)                  # -1 marks positions after a stop
        return 1.0 - emitted / self.cfg.length
