"""Likelihood estimators of a masked-diffusion LM: a registry of functions `f(ctx, **params) -> [n, L]`.

Each returns one value per completion token; its sum over a sample's tokens is that estimator's sequence
log-likelihood (token-level objectives read the values, sequence-level ones their sum). Each declares what it
needs from the rollout and the trainer (`needs`): "generator" (it draws random masks: the same trainer
generator gives the same masks, see `masks.py`), "decoding_order" (it replays the recorded order) or
"advantage_sign" (SPG: which bound a sample gets; read from `rollout.state["advantage_sign"]`, which the
core does not write yet - see docs/mdlm.md). An unknown name or parameter raises an error listing the valid
ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from . import masks as M


@dataclass
class ScoreContext:
    """What an estimator may read: the recorded sequence and a batched scorer of masked views."""

    forward: Callable[[Tensor, Tensor], Tensor]   # ([B, S] ids, [B, S] attention) -> [B, S, V] aligned logits
    prompt: Tensor                 # [n, P] prompt ids (left-padded)
    prompt_attn: Tensor            # [n, P] bool, False on padding
    completion: Tensor             # [n, L] sampled completion ids
    order: Tensor                  # [n, L] int64 decoding step at which each completion token was committed
    mask_id: int
    temperature: float = 1.0
    gens: list[torch.Generator] = field(default_factory=list)   # one per sample (estimators needing "generator")
    adv_sign: Tensor | None = None  # [n] sign of each sample's advantage (estimators needing "advantage_sign")

    def views(self, completion_masks: Tensor, prompt_masks: Tensor | None = None) -> Tensor:
        """[n, K, L] completion masks (+ optional [n, K, P] prompt masks) -> [n, K, L] log p(y_i | view k).

        All K views of all n samples go through the denoiser in one forward pass.
        """
        n, k, length = completion_masks.shape
        dev = self.completion.device
        comp = torch.where(completion_masks.to(dev), self.mask_id, self.completion[:, None])    # [n, K, L]
        prompt = self.prompt[:, None].expand(n, k, -1)
        if prompt_masks is not None:
            pm = prompt_masks.to(dev) & self.prompt_attn[:, None]           # padding stays padding
            prompt = torch.where(pm, self.mask_id, prompt)
        ids = torch.cat([prompt, comp], 2).reshape(n * k, -1)                # [nK, P + L]
        attn = torch.cat([self.prompt_attn, torch.ones_like(self.completion, dtype=torch.bool)], 1)
        attn = attn[:, None].expand(n, k, -1).reshape(n * k, -1)
        logits = self.forward(ids, attn)[:, -length:] / self.temperature    # [nK, L, V]
        logp = torch.log_softmax(logits, -1)
        tok = self.completion[:, None].expand(n, k, length).reshape(n * k, length, 1)
        return logp.gather(-1, tok).squeeze(-1).reshape(n, k, length)       # [n, K, L]


@dataclass(frozen=True)
class Estimator:
    name: str
    fn: Callable[..., Tensor]
    needs: tuple[str, ...]
    params: dict
    description: str

    def bind(self, params: dict) -> Callable[[ScoreContext], Tensor]:
        unknown = sorted(set(params) - set(self.params))
        if unknown:
            raise ValueError(f"estimator {self.name!r} has no parameters {unknown}; valid: {sorted(self.params)}")
        full = {**self.params, **params}
        return lambda ctx: self.fn(ctx, **full)


ESTIMATORS: dict[str, Estimator] = {}
NEEDS = ("generator", "decoding_order", "advantage_sign")


def register(name: str, needs: tuple[str, ...] = (), **params):
    """Decorator: `@register("d1", needs=("generator",), prompt_mask_p=0.3)` (defaults of its parameters)."""
    bad = sorted(set(needs) - set(NEEDS))
    if bad:
        raise ValueError(f"estimator {name!r} needs unknown inputs {bad}; valid: {list(NEEDS)}")

    def deco(fn):
        doc = (fn.__doc__ or "").strip().splitlines()
        ESTIMATORS[name] = Estimator(name, fn, tuple(needs), dict(params), doc[0] if doc else "")
        return fn

    return deco


def get(name: str) -> Estimator:
    try:
        return ESTIMATORS[name]
    except KeyError:
        raise KeyError(f"unknown mdlm estimator {name!r}; valid names: {', '.join(sorted(ESTIMATORS))}") from None


@register("d1", needs=("generator",), prompt_mask_p=0.3)
def one_step(ctx: ScoreContext, prompt_mask_p: float) -> Tensor:
    """d1 / diffu-GRPO: one forward, completion fully masked, each prompt token masked with p."""
    if not 0.0 <= prompt_mask_p < 1.0:
        raise ValueError(f"estimator d1 prompt_mask_p must lie in [0, 1), got {prompt_mask_p}")
    n, length = ctx.completion.shape
    comp = torch.ones(n, 1, length, dtype=torch.bool)
    prompt = M.bernoulli_masks(ctx.gens, ctx.prompt.shape[1], prompt_mask_p)[:, None]      # [n, 1, P]
    return ctx.views(comp, prompt)[:, 0]                                                    # [n, L]


@register("coupled", needs=("generator",), t_min=0.2, t_max=0.8)
def coupled(ctx: ScoreContext, t_min: float, t_max: float) -> Tensor:
    """Coupled-GRPO (DiffuCoder): complementary masks M, not M score each token once; averaged with the
    fully masked view: (log p(y_i | all masked) + log p(y_i | the view of M, not M masking i)) / 2."""
    if not 0.0 <= t_min <= t_max <= 1.0:
        raise ValueError(f"estimator coupled needs 0 <= t_min <= t_max <= 1, got {t_min}, {t_max}")
    n, length = ctx.completion.shape
    m, _ = M.coupled_masks(ctx.gens, length, t_min, t_max)                                 # [n, L]
    full = torch.ones_like(m)
    lp = ctx.views(torch.stack([full, m, ~m], 1))                                           # [n, 3, L]
    paired = torch.where(m, lp[:, 1], lp[:, 2])                                             # each token once
    return 0.5 * (lp[:, 0] + paired)


@register("elbo", needs=("generator",), nodes=3)
def gauss_legendre_elbo(ctx: ScoreContext, nodes: int) -> Tensor:
    """GDPO (S32): the sequence ELBO by semi-deterministic Monte Carlo over Gauss-Legendre nodes t_j of the
    mask ratio, exactly k_j = round(t_j * L) positions masked per node:
    sum_j w_j (L / k_j) sum_{i in M_j} log p(y_i | M_j masked).

    L / k_j is 1 / t_j up to the rounding; it keeps each node an unbiased estimate of L times the mean
    per-token log-likelihood at k_j masked tokens (LLaDA's ELBO weight), so the weights' mass stays L.
    """
    n, length = ctx.completion.shape
    t, w = M.gauss_legendre(int(nodes))
    counts = M.node_counts(t, length)                                                       # [J]
    views = torch.stack([M.exact_count_masks(ctx.gens, length, c.expand(n)) for c in counts], 1)  # [n, J, L]
    lp = ctx.views(views)                                                                   # [n, J, L]
    coef = (w * length / counts).float()[None, :, None]                                     # [1, J, 1]
    return (coef * lp * views.float()).sum(1)                                               # [n, L]


@register("trace", needs=("decoding_order",))
def trace_replay(ctx: ScoreContext) -> Tensor:
    """TraceRL: replay the rollout's decoding order; at step s mask what was decoded at steps >= s and score
    what was decoded at s (exact: equals the sampler's own log-probs)."""
    steps = int(ctx.order.max()) + 1 if ctx.order.numel() else 0
    s = torch.arange(steps, device=ctx.order.device)
    views = ctx.order[:, None, :] >= s[None, :, None]                                       # [n, S, L]
    lp = ctx.views(views)                                                                   # [n, S, L]
    return lp.gather(1, ctx.order[:, None, :].to(lp.device)).squeeze(1)                     # [n, L]


@register("ar")
def left_to_right(ctx: ScoreContext) -> Tensor:
    """JustGRPO (S22): left-to-right order, log p(y_i | prompt, y_<i, rest masked); the exact likelihood of
    sampling with block length 1."""
    n, length = ctx.completion.shape
    k = torch.arange(length)
    views = (k[None, :] >= k[:, None])[None].expand(n, -1, -1)                             # view k masks >= k
    lp = ctx.views(views)                                                                   # [n, L, L]
    return lp.diagonal(dim1=1, dim2=2)                                                      # [n, L]


def random_orders(gens: list[torch.Generator], length: int, k: int) -> Tensor:
    """[n, k, L] int64: k uniformly random decoding orders per sample (order[.., i] = step of token i)."""
    rows = [torch.stack([torch.argsort(torch.randperm(length, generator=g)) for _ in range(k)]) for g in gens]
    return torch.stack(rows) if rows else torch.zeros(0, k, length, dtype=torch.long)


def order_log_probs(ctx: ScoreContext, orders: Tensor) -> Tensor:
    """[n, K, L] orders -> [n, K, L] log p(y_i | tokens decoded before i's step in that order), one forward."""
    n, k, length = orders.shape
    s = torch.arange(length)
    views = orders[:, :, None, :] >= s[None, None, :, None]                                # [n, K, S, L]
    lp = ctx.views(views.reshape(n, k * length, length)).reshape(n, k, length, length)    # [n, K, S, L]
    return lp.gather(2, orders[:, :, None, :].to(lp.device)).squeeze(2)                   # [n, K, L]


@register("spg", needs=("generator", "advantage_sign"), orders=2, beta=1.5, mix=1.0)
def sandwiched(ctx: ScoreContext, orders: int, beta: float, mix: float) -> Tensor:
    """SPG (sandwiched policy gradient): a lower bound of log p(y) for positive-advantage samples, an upper
    bound for negative ones, from the same K random decoding orders s_k = log p_order_k(y) (K * L views).

    p(y) = E_order[p_order(y)] is the masked-diffusion model's likelihood (uniformly random order).
    Lower (A >= 0): mean_k s_k, unbiased for the ELBO E_order[log p_order(y)] <= log p(y) (Jensen).
    Upper (A < 0): mix * (1/beta) log mean_k exp(beta s_k) + (1 - mix) * mean_k s_k; at mix 1 it estimates
    U_beta = (1/beta) log E_order[p_order(y)^beta] >= log p(y) for beta >= 1 (power-mean inequality), and on
    every draw it is >= the lower estimate. Token values: sum_k w_k log p_k(y_i) with w = softmax(beta s)
    (detached) plus a detached constant / L, so their sum is the bound and their gradient its gradient.
    """
    if int(orders) < 1 or not beta >= 1.0 or not 0.0 <= mix <= 1.0:
        raise ValueError(f"estimator spg needs orders >= 1, beta >= 1, 0 <= mix <= 1; got {orders}, {beta}, {mix}")
    if ctx.adv_sign is None:
        raise ValueError("estimator spg needs each sample's advantage sign (rollout.state['advantage_sign']); "
                         "the trainer records it through MDLMPolicy.with_advantages before the first update")
    n, length = ctx.completion.shape
    lp = order_log_probs(ctx, random_orders(ctx.gens, length, int(orders)))                # [n, K, L]
    s = lp.sum(2)                                                                           # [n, K]
    lower = lp.mean(1)                                                                      # [n, L]
    w = torch.softmax(beta * s.detach(), 1)                                                 # [n, K]
    upper_seq = (torch.logsumexp(beta * s, 1) - math.log(s.shape[1])) / beta                # [n]
    tilted = (w[:, :, None] * lp).sum(1)                                                    # [n, L]
    upper = tilted + ((upper_seq - tilted.sum(1)) / length).detach()[:, None]
    upper = mix * upper + (1.0 - mix) * lower
    neg = (ctx.adv_sign.to(lp.device) < 0)[:, None]
    return torch.where(neg, upper, lower)
