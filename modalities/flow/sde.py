"""Stateless stochastic sampling steps for flow-matching models, each with its Gaussian log-prob (fp32).

Every step maps the current latent `x` at noise level `sigma` and the predicted velocity `v` to the latent at
`sigma_next < sigma` (sigmas run from 1 = noise to 0 = data; `dt = sigma_next - sigma < 0`). Signature:

    fn(x, v, sigma, sigma_next, noise_level, prev=None, generator=None, subspace=None)
        -> (prev, log_prob, mean, std)

- `x`, `v`: image latents `[B, C, H, W]` or video latents `[B, C, F, H, W]` (any rank >= 2; scalars are
  broadcast by the latent's rank, never by a hard-coded `view(-1, 1, 1, 1)`).
- `sigma`, `sigma_next`: Python floats or `[B]` tensors (per-sample steps, e.g. a window per group).
- `noise_level`: the method's stochasticity knob (Flow-GRPO `a`, CPS `a`, DanceGRPO `eta`).
- `prev`: a given next latent (replay: recompute the log-prob of what was sampled); else it is sampled with
  `generator`, a single `torch.Generator` or a list of B generators (one per sample).
- returns `prev` (fp32, same shape as `x`), `log_prob [B]` averaged over all non-batch dimensions (the
  Flow-GRPO convention: a mean, not a sum, hence tiny clip ranges), `mean` (fp32, shape of `x`) and `std`.

Convention for `std` (it is what each reference implementation returns, so that the reference KL
`||mean_theta - mean_ref||^2 / (2 std^2)` reproduces the reference number):
- `flow_grpo`: the diffusion coefficient `std = a*sqrt(s/(1-s))`; the transition std is `std*sqrt(-dt)`.
- `cps`, `dance`: the transition std itself (`prev = mean + std*eps`).
- `ode`: zero.
`std` has shape `[B, 1, ..., 1]` (rank of `x`) so it broadcasts against the latent.

Low-dimensional exploration (`subspace=NoiseSubspace(...)`, every stochastic step accepts it): the step's
noise lives in a k-dimensional subspace of the latent's last two (spatial) axes, spanned by the orthonormal
columns of P (block-constant or low-frequency DCT, `factor` f: k = C * (H/f) * (W/f)):

    prev = mean + step_std * g * P e,      e ~ N(0, I_k),   g = sqrt(D / k) ("amplitude": per-latent-pixel
                                                            variance as the full step's) or 1 ("projection":
                                                            the full step's noise projected onto the subspace)
    e    = P^T (prev - mean) / (g * step_std),   log_prob = mean over k of (-e^2/2 - log(g step_std) - log(2 pi)/2)

the exact log-density of the subspace Gaussian (in P's orthonormal coordinates), averaged over its k
dimensions as the full step averages over D. Block factor 1 is the identity: exactly the full step. A
reward that depends on few directions of the latent then sees exploration only there, and the REINFORCE term
carries the noise of k dimensions instead of D. Steps whose "log-prob" is a plain squared distance (cps,
ode) use `-mean over k of (P^T (prev - mean) / g)^2`.

Formulas: CATALOG.md section 5, checked against flow_grpo's `sd3_sde_with_logprob.py` (`sde` and `cps`
branches) and DanceGRPO's `flux_step` (`sde_solver=True`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence, Union

import torch
from torch import Tensor

from mmgrpo.registry import Registry

Generator = Union[torch.Generator, Sequence[torch.Generator], None]
Scalar = Union[float, Tensor]
StepFn = Callable[..., tuple]

STEPS: Registry[StepFn] = Registry("flow SDE step")


def get(kind: str) -> StepFn:
    """The step function registered as `kind` (flow_grpo, cps, dance, ode); unknown names list the valid ones."""
    return STEPS.get(kind)


def _per_sample(value: Scalar, x: Tensor) -> Tensor:
    """A float or `[B]` tensor as an fp32 tensor `[B, 1, ..., 1]` with the rank of `x`."""
    t = torch.as_tensor(value, dtype=torch.float32, device=x.device)
    if t.dim() == 0:
        t = t.expand(x.shape[0])
    if t.shape != (x.shape[0],):
        raise ValueError(f"sigma must be a float or a [B]={x.shape[0]} tensor; got shape {tuple(t.shape)}")
    return t.reshape(x.shape[0], *([1] * (x.dim() - 1)))


def randn_like(x: Tensor, generator: Generator) -> Tensor:
    """Standard normal noise shaped like `x` (fp32), from one generator or one generator per sample.

    With a list, sample i's noise depends only on generator i, so a sample is reproducible whatever the
    batch it lands in. Noise is drawn on the generator's device and then moved to `x`'s device.
    """
    if generator is None or isinstance(generator, torch.Generator):
        dev = generator.device if generator is not None else x.device
        return torch.randn(x.shape, generator=generator, device=dev, dtype=torch.float32).to(x.device)
    if len(generator) != x.shape[0]:
        raise ValueError(f"got {len(generator)} generators for a batch of {x.shape[0]} samples; pass one per sample")
    return torch.stack(
        [torch.randn(x.shape[1:], generator=g, device=g.device, dtype=torch.float32) for g in generator]
    ).to(x.device)


def _mean_over_sample(t: Tensor) -> Tensor:
    """`[B, ...] -> [B]`: mean over every non-batch dimension."""
    return t.mean(dim=tuple(range(1, t.dim())))


def _prepare(x: Tensor, v: Tensor, prev: Tensor | None):
    if x.shape != v.shape:
        raise ValueError(f"latent {tuple(x.shape)} and velocity {tuple(v.shape)} must have the same shape")
    if prev is not None and prev.shape != x.shape:
        raise ValueError(f"given next latent {tuple(prev.shape)} must have the latent's shape {tuple(x.shape)}")
    # bf16 overflows in the mean; all step math runs in fp32 (as flow_grpo does).
    return x.float(), v.float(), (prev.float() if prev is not None else None)


@dataclass(frozen=True)
class NoiseSubspace:
    """Where a stochastic step explores: `kind` block (block-constant noise, `factor` x `factor` latent
    pixels per block) or lowfreq (the (H/f) x (W/f) lowest DCT-II frequencies); `gain` amplitude or projection
    (see the module docstring). Acts on the last two axes, so image `[B,C,H,W]` and video `[B,C,F,H,W]` alike."""

    kind: str = "block"
    factor: int = 1
    gain: str = "amplitude"

    def __post_init__(self):
        if self.kind not in SUBSPACE_KINDS:
            raise ValueError(f"noise subspace kind must be one of {sorted(SUBSPACE_KINDS)}; got {self.kind!r}")
        if int(self.factor) != self.factor or self.factor < 1:
            raise ValueError(f"noise subspace factor must be an integer >= 1; got {self.factor!r}")
        if self.gain not in ("amplitude", "projection"):
            raise ValueError(f"noise subspace gain must be 'amplitude' or 'projection'; got {self.gain!r}")

    def basis(self, side: int, device=None) -> Tensor:
        """Orthonormal columns `[side, side // factor]` along one axis (P = basis_H kron basis_W)."""
        f = int(self.factor)
        if side % f:
            raise ValueError(f"noise subspace factor {f} must divide the latent side {side}")
        return SUBSPACE_KINDS[self.kind](side, f).to(device)

    def _bases(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if x.dim() < 3:
            raise ValueError(f"a noise subspace needs latents with two spatial axes; got shape {tuple(x.shape)}")
        return self.basis(x.shape[-2], x.device), self.basis(x.shape[-1], x.device)

    def gain_value(self) -> float:
        return float(self.factor) if self.gain == "amplitude" else 1.0   # sqrt(D / k) = f for both kinds

    def reduce(self, d: Tensor) -> Tensor:
        """`P^T d`: `[..., H, W] -> [..., H/f, W/f]` subspace coordinates (orthonormal)."""
        bh, bw = self._bases(d)
        return torch.einsum("...hw,hi,wj->...ij", d, bh, bw)

    def lift(self, e: Tensor, like: Tensor) -> Tensor:
        """`P e`: `[..., H/f, W/f] -> [..., H, W]` (the shape of `like`)."""
        bh, bw = self._bases(like)
        return torch.einsum("...ij,hi,wj->...hw", e, bh, bw)

    def reduced_shape(self, x: Tensor) -> tuple[int, ...]:
        f = int(self.factor)
        return (*x.shape[:-2], x.shape[-2] // f, x.shape[-1] // f)


def _block_basis(side: int, f: int) -> Tensor:
    """Column i is 1/sqrt(f) on rows [i f, (i+1) f): block-constant, orthonormal; f = 1 is the identity."""
    return torch.eye(side // f).repeat_interleave(f, 0) / math.sqrt(f)


def _dct_basis(side: int, f: int) -> Tensor:
    """The `side // f` lowest-frequency orthonormal DCT-II vectors as columns."""
    n = torch.arange(side, dtype=torch.float64)[:, None]
    k = torch.arange(side // f, dtype=torch.float64)[None, :]
    b = torch.cos(math.pi * (n + 0.5) * k / side) * math.sqrt(2.0 / side)
    b[:, 0] = 1.0 / math.sqrt(side)
    return b.float()


SUBSPACE_KINDS = {"block": _block_basis, "lowfreq": _dct_basis}


def step_noise(x: Tensor, generator: Generator, subspace: "NoiseSubspace | None") -> Tensor:
    """Unit noise for a step on `x`: full standard normal, or `g P e` with e ~ N(0, I_k) in the subspace."""
    if subspace is None:
        return randn_like(x, generator)
    e = randn_like(x.new_empty(subspace.reduced_shape(x)), generator)
    return subspace.gain_value() * subspace.lift(e, x)


def _gaussian_or_subspace(prev: Tensor, mean: Tensor, step_std: Tensor, subspace) -> Tensor:
    if subspace is None:
        return gaussian_log_prob(prev, mean, step_std)
    g = subspace.gain_value()
    # r = P^T (prev - mean) / g = step_std * e; written as the full step's density so that block factor 1
    # (P = I, g = 1, log g = 0) reproduces it bit for bit; -log g makes it exact in P's coordinates
    r = subspace.reduce(prev.detach() - mean) / g
    logp = -(r**2) / (2 * step_std**2) - torch.log(step_std) - math.log(g) - 0.5 * math.log(2 * math.pi)
    return _mean_over_sample(logp)


def _squared_or_subspace(prev: Tensor, mean: Tensor, subspace) -> Tensor:
    d = prev.detach() - mean
    if subspace is None:
        return -_mean_over_sample(d**2)
    return -_mean_over_sample((subspace.reduce(d) / subspace.gain_value()) ** 2)


def subspace_mean_kl(mean: Tensor, ref_mean: Tensor, std: Tensor, subspace) -> Tensor:
    """Flow-GRPO's Gaussian mean KL `[B]` measured where the step explores: mean over the k subspace
    dimensions of `(P^T (mean - ref_mean) / g)^2 / (2 std^2)`; without a subspace, over all D dimensions."""
    d = mean - ref_mean
    if subspace is not None:
        d = subspace.reduce(d) / subspace.gain_value()
        std = std.reshape(std.shape[0], *([1] * (d.dim() - 1)))
    return _mean_over_sample(d**2 / (2 * std**2))


def gaussian_log_prob(prev: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """Per-element Gaussian log-density of `prev` under N(mean, std^2), averaged per sample -> `[B]`.

    `prev` is detached (the action is data; gradients flow through `mean` and `std`).
    """
    var = std**2
    logp = -((prev.detach() - mean) ** 2) / (2 * var) - torch.log(std) - 0.5 * math.log(2 * math.pi)
    return _mean_over_sample(logp)


@STEPS.register("flow_grpo", "Flow-GRPO SDE: the reverse SDE with the same marginals as the flow ODE", "Flow-GRPO")
def flow_grpo_step(x, v, sigma, sigma_next, noise_level, prev=None, generator=None, subspace=None):
    """Flow-GRPO SDE step (Liu et al. 2025, flow_grpo `sde_step_with_logprob`, `sde_type='sde'`).

    std_t = a * sqrt(s / (1 - s))                (at s == 1 the denominator uses 1 - sigma_next, as the
                                                  reference uses `sigmas[1]`, the next sigma of step 0)
    mean  = x * (1 + std_t^2 * dt / (2 s)) + v * (1 + std_t^2 * (1 - s) / (2 s)) * dt
    prev  = mean + std_t * sqrt(-dt) * eps
    log_prob = mean over dims of log N(prev; mean, (std_t sqrt(-dt))^2)
    Returns `std = std_t` (the diffusion coefficient; see module doc). With a = 0 this is the Euler step.
    """
    x, v, prev = _prepare(x, v, prev)
    s, s2 = _per_sample(sigma, x), _per_sample(sigma_next, x)   # [B,1,...]
    dt = s2 - s                                                   # [B,1,...] < 0
    denom = 1 - torch.where(s >= 1, s2, s)
    std_t = noise_level * torch.sqrt(s / denom)                   # [B,1,...]
    mean = x * (1 + std_t**2 / (2 * s) * dt) + v * (1 + std_t**2 * (1 - s) / (2 * s)) * dt
    step_std = std_t * torch.sqrt(-dt)                            # transition std
    if prev is None:
        prev = mean + step_std * step_noise(x, generator, subspace)
    if noise_level == 0:
        log_prob = torch.zeros(x.shape[0], device=x.device)       # a point mass: density undefined, use 0
    else:
        log_prob = _gaussian_or_subspace(prev, mean, step_std, subspace)
    return prev, log_prob, mean, std_t


@STEPS.register("cps", "coefficients-preserving sampling: noise injected without inflating the latent's norm", "CPS")
def cps_step(x, v, sigma, sigma_next, noise_level, prev=None, generator=None, subspace=None):
    """Coefficients-preserving sampling step (Wang & Yu 2025, flow_grpo `sde_type='cps'`).

    std  = s2 * sin(a * pi / 2)
    x0   = x - s * v          (predicted data)      x1 = x + (1 - s) * v     (predicted noise)
    mean = (1 - s2) * x0 + sqrt(s2^2 - std^2) * x1
    prev = mean + std * eps
    log_prob = -mean over dims of (prev - mean)^2   (the reference drops all constants and the 1/(2 std^2)
               factor; ratios of this "log-prob" are what the reference trains on, and we keep it so).
    Returns `std` = the transition std.
    """
    x, v, prev = _prepare(x, v, prev)
    s, s2 = _per_sample(sigma, x), _per_sample(sigma_next, x)
    std = s2 * math.sin(noise_level * math.pi / 2)                # [B,1,...]
    x0 = x - s * v
    x1 = x + (1 - s) * v
    mean = (1 - s2) * x0 + torch.sqrt(s2**2 - std**2) * x1
    if prev is None:
        prev = mean + std * step_noise(x, generator, subspace)
    log_prob = _squared_or_subspace(prev, mean, subspace)
    return prev, log_prob, mean, std


@STEPS.register("dance", "DanceGRPO SDE: Euler step plus a score correction from the predicted clean sample",
                "DanceGRPO")
def dance_step(x, v, sigma, sigma_next, noise_level, prev=None, generator=None, subspace=None):
    """DanceGRPO SDE step (Xue et al. 2025, `flux_step` with `sde_solver=True`).

    x0    = x - s * v
    score = -(x - (1 - s) * x0) / s^2
    mean  = x + dt * v - 0.5 * eta^2 * score * dt
    std   = eta * sqrt(s - s2)                     (the transition std)
    prev  = mean + std * eps
    log_prob = mean over dims of log N(prev; mean, std^2)
    """
    x, v, prev = _prepare(x, v, prev)
    s, s2 = _per_sample(sigma, x), _per_sample(sigma_next, x)
    dt = s2 - s
    x0 = x - s * v
    score = -(x - (1 - s) * x0) / s**2
    mean = x + dt * v - 0.5 * noise_level**2 * score * dt
    std = noise_level * torch.sqrt(-dt)
    if prev is None:
        prev = mean + std * step_noise(x, generator, subspace)
    if noise_level == 0:
        log_prob = torch.zeros(x.shape[0], device=x.device)
    else:
        log_prob = _gaussian_or_subspace(prev, mean, std, subspace)
    return prev, log_prob, mean, std


@STEPS.register("ode", "deterministic Euler step of the flow ODE (no exploration)")
def ode_step(x, v, sigma, sigma_next, noise_level=0.0, prev=None, generator=None, subspace=None):
    """Euler step of the probability-flow ODE: `mean = x + v * dt`, `std = 0`.

    Deterministic, so there is no density; `log_prob = -mean over dims of (prev - mean)^2` (as flow_grpo's
    `ode_step_with_logprob`), which is 0 for the step's own output. `noise_level` and `generator` are ignored;
    with a `subspace` the distance is measured in it.
    """
    x, v, prev = _prepare(x, v, prev)
    s, s2 = _per_sample(sigma, x), _per_sample(sigma_next, x)
    mean = x + v * (s2 - s)
    if prev is None:
        prev = mean
    log_prob = _squared_or_subspace(prev, mean, subspace)
    return prev, log_prob, mean, torch.zeros_like(s)
