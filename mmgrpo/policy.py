"""`PolicyBase`: what every modality adapter gives the trainer, with the defaults of the optional hooks.

An adapter subclasses it and implements `trainable_module`, `sample` and `log_prob`; everything else has a
default that is right for most adapters. The trainer `accelerate.prepare`s `trainable_module()` (DDP, FSDP2,
DeepSpeed) and hands the prepared module back through `bind_prepared`; an adapter runs its *training*
forward passes through `self.forward_module` so that the engine's hooks (gradient sync, parameter
all-gather) see them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ContextManager

import torch
from torch import Tensor, nn

from .rollout import Rollout, SampleBatch


class PassGenerator(torch.Generator):
    """The generator the trainer hands `log_prob` / `forward_process` for one (micro-batch, chunk) pass.

    Drawn from directly it is one stream for the whole pass (old, reference and current log-probs of that
    pass see the same draws). Estimators whose draws must not depend on how samples are grouped into
    micro-batches (Monte Carlo masks whose old log-probs were recomputed in another grouping, regression
    noise that must equal across micro-batch splits) use `for_sample(i)`: a fresh generator seeded from the
    i-th sample's identity in the step (run seed, step, rank, index in the train batch, chunk start), or
    derive their own per-sample seeds from `chunk_seed` (shared by every pass of this step and chunk) and a
    seed the rollout recorded for each sample.
    """

    def __new__(cls, seed: int, sample_seeds: list[int] | Tensor, chunk_seed: int = 0, device: str = "cpu"):
        return super().__new__(cls, device)

    def __init__(self, seed: int, sample_seeds: list[int] | Tensor, chunk_seed: int = 0, device: str = "cpu"):
        self.manual_seed(int(seed))
        self.chunk_seed = int(chunk_seed)
        self.sample_seeds = [int(s) for s in (sample_seeds.tolist() if isinstance(sample_seeds, Tensor)
                                              else sample_seeds)]

    def for_sample(self, i: int) -> torch.Generator:
        """A generator for sample `i` of the pass that depends only on that sample (not on its micro-batch)."""
        return torch.Generator().manual_seed(self.sample_seeds[i])


@dataclass
class StepOutput:
    """`log_prob`'s result: log-probs of the requested positions plus what `reference_kl` may reuse."""

    log_probs: Tensor          # [n, len(positions)] fp32, differentiable in the trainable weights
    aux: Any = None            # adapter-private (flows: the step means and stds, so the KL skips a forward)


class PolicyBase:
    """Base class of every adapter (see the module docstring). Class attributes are the defaults."""

    time_chunk: int | None = None            # positions per backward pass; None = all at once
    recompute_old_log_probs: bool = False    # the trainer recomputes old log-probs with the current weights
    #                                          before the first update (Monte Carlo likelihood estimators)
    provides: tuple[str, ...] = ()           # optional rollout fields filled (mmgrpo.inputs.ROLLOUT_FIELDS)
    _prepared: nn.Module | None = None

    # ---------------------------------------------------------------- what an adapter must give
    def trainable_module(self) -> nn.Module:
        """The `nn.Module` holding every trainable parameter (what accelerate wraps)."""
        raise NotImplementedError(f"{type(self).__name__} must implement trainable_module()")

    def sample(self, batch: SampleBatch, evaluate: bool = False) -> Rollout:
        """Sample one output per condition of `batch` (no grad); `evaluate=True` for held-out evaluation."""
        raise NotImplementedError(f"{type(self).__name__} must implement sample()")

    def log_prob(self, rollout: Rollout, positions: slice, generator: torch.Generator | None = None) -> StepOutput:
        """Log-probs [n, len(positions)] of the recorded decisions under the current weights.

        `generator` is given by the trainer to estimators that draw random masks or timesteps: the same
        generator state is used for the old, reference and current log-probs of one micro-batch.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement log_prob()")

    # ---------------------------------------------------------------- engine plumbing
    def bind_prepared(self, module: nn.Module) -> None:
        """Called by the trainer with the prepared (wrapped or sharded) `trainable_module()`."""
        self._prepared = module

    @property
    def forward_module(self) -> nn.Module:
        """The module to call for training forwards: the prepared one once bound, else the raw one."""
        return self._prepared if self._prepared is not None else self.trainable_module()

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.trainable_module().parameters() if p.requires_grad]

    def train(self) -> "PolicyBase":
        self.trainable_module().train()
        return self

    def eval(self) -> "PolicyBase":
        self.trainable_module().eval()
        return self

    # ---------------------------------------------------------------- reference and KL
    def reference(self) -> ContextManager:
        """Context in which `log_prob` computes the frozen reference policy (e.g. LoRA disabled)."""
        raise NotImplementedError(f"{type(self).__name__} has no reference policy; set loss.kl_beta=0 or "
                                  "implement reference()")

    def ref_log_prob(self, rollout: Rollout, positions: slice, generator: torch.Generator | None = None) -> Tensor:
        """Reference log-probs [n, len] (no grad), by default `log_prob` inside `reference()`."""
        with torch.no_grad(), self.reference():
            return self.log_prob(rollout, positions, generator).log_probs

    def reference_kl(self, rollout: Rollout, positions: slice, out: StepOutput, estimator,
                     generator: torch.Generator | None = None) -> Tensor:
        """KL to the reference [n, len]; default: the configured estimator (k1/k2/k3) on log-probs.

        Adapters with a closed form override it (flows: the Gaussian mean KL, reusing `out.aux`).
        """
        return estimator(out.log_probs, self.ref_log_prob(rollout, positions, generator))

    def with_advantages(self, rollout: Rollout, advantages: Tensor) -> Rollout:
        """Called once per step after the advantages are known ([n] or [n, T], this rank's samples), before any
        update; an adapter whose likelihood estimator depends on them (SPG: a lower bound for positive, an upper
        bound for negative advantages) records what it needs in `rollout.state`. Default: unchanged."""
        return rollout

    # ---------------------------------------------------------------- forward-process objectives
    def forward_process(self, rollout: Rollout, generator: torch.Generator | None = None, needs: tuple = (),
                        step: int | None = None) -> dict[str, Tensor]:
        """The tensors a forward-process (regression) objective consumes (`consumes = "forward_process"`; the
        objective's `forward_inputs` name them, the trainer passes them as `needs`, plus "v_ref" when
        `loss.kl_beta > 0`), e.g. for flows on clean samples at fresh `(eps, t)` drawn from `generator`:
        `v` (with gradient), `v_old`, `v_ref`, `eps`, `t`, `x0` and `kl_ref [n]` (AWM, DiffusionNFT).
        `step` lets the adapter move an old policy (DiffusionNFT's EMA) once per training step."""
        raise NotImplementedError(f"{type(self).__name__} has no forward process; choose a likelihood-ratio "
                                  "objective (mmgrpo list objectives)")

    # ---------------------------------------------------------------- checkpoints and exports
    def state_dict_trainable(self) -> dict[str, Tensor]:
        """Trainable weights by name (the trainer turns sharded ones into full tensors)."""
        return {n: p for n, p in self.trainable_module().named_parameters() if p.requires_grad}

    def load_state_dict_trainable(self, sd: dict[str, Tensor]) -> None:
        params = dict(self.trainable_module().named_parameters())
        missing = [n for n, p in params.items() if p.requires_grad and n not in sd]
        if missing:
            raise KeyError(f"checkpoint lacks trainable weights {missing[:4]}")
        with torch.no_grad():
            for n, p in params.items():
                if p.requires_grad:
                    p.copy_(sd[n])

    def save_pretrained(self, directory: str | Path, state: dict[str, Tensor] | None = None) -> None:
        """Export in the ecosystem's format; default: the trainable weights as one safetensors file."""
        from safetensors.torch import save_file

        Path(directory).mkdir(parents=True, exist_ok=True)
        sd = state if state is not None else self.state_dict_trainable()
        save_file({k: v.detach().cpu().contiguous() for k, v in sd.items()}, str(Path(directory) / "model.safetensors"))

    def save_samples(self, prefix: Path, rollout: Rollout, scores: Tensor) -> None:
        from .media import save_outputs

        save_outputs(prefix, rollout.outputs, rollout.conds, scores)
