"""The one-time-axis contract: `Rollout`, `SampleBatch` and the `Policy` protocol every adapter follows."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Iterable, Protocol, runtime_checkable

import torch
from torch import Tensor


def select_items(value: Any, idx: Tensor) -> Any:
    """Index the leading (sample) axis of a tensor, list, tuple, dict of those, or an object with `.select`.

    This is how a rollout is cut into minibatches without the core knowing what adapters store.
    """
    if value is None:
        return None
    if isinstance(value, Tensor):
        return value[idx.to(value.device)]
    if hasattr(value, "select") and not isinstance(value, (str, bytes)):
        return value.select(idx)
    if isinstance(value, dict):
        return {k: select_items(v, idx) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        picked = [value[i] for i in idx.tolist()]
        return type(value)(picked) if isinstance(value, tuple) else picked
    raise TypeError(
        f"cannot select samples from a {type(value).__name__}; rollout fields must be tensors with a "
        "leading sample axis, lists, dicts of those, or objects with a .select(idx) method"
    )


def concat_items(values: list[Any]) -> Any:
    """Inverse of `select_items` over a list of parts (used to merge rollouts sampled in chunks)."""
    first = values[0]
    if first is None:
        return None
    if isinstance(first, Tensor):
        return torch.cat(values, 0)
    if hasattr(type(first), "concat"):
        return type(first).concat(values)
    if isinstance(first, dict):
        return {k: concat_items([v[k] for v in values]) for k in first}
    if isinstance(first, (list, tuple)):
        out = [x for v in values for x in v]
        return type(first)(out) if isinstance(first, tuple) else out
    raise TypeError(f"cannot concatenate rollout field of type {type(first).__name__}")


@dataclass
class SampleBatch:
    """What the trainer asks a policy to sample: one entry per sample (this rank's share).

    Seeds are per sample and derived from (run seed, step, global sample index), so what a sample
    looks like never depends on how samples are spread over ranks or micro-batches. `group_seeds`
    is shared by all members of a group (for shared initial noise or a group-wide SDE window).
    """

    conds: list                     # [N] prompts / conditions
    group_ids: Tensor               # [N] int64
    seeds: Tensor                   # [N] int64, unique per sample
    group_seeds: Tensor             # [N] int64, equal within a group
    step: int = 0                   # training step (for schedules that move over training)

    def __len__(self) -> int:
        return len(self.conds)


@dataclass
class Rollout:
    """Samples on one time axis. Positions are SDE steps, tokens or decoding steps, per adapter."""

    group_ids: Tensor               # [N] int64, assigned by the group sampler
    log_probs: Tensor               # [N, T] behaviour-policy log-probs (fp32)
    mask: Tensor                    # [N, T] bool, trainable positions
    outputs: Any                    # images [N,3,H,W] / videos [N,F,3,H,W] / audio / text, for rewards
    conds: list                     # [N] conditions
    state: Any = None               # adapter-private replay data, leading axis N
    # Optional fields that methods may read; adapters fill them when they can.
    entropy: Tensor | None = None           # [N, T] per-position entropy
    token_ids: Tensor | None = None         # [N, T] int64
    segment_ids: Tensor | None = None       # [N, T] int64 (sentence, item, phase, turn)
    stratum_ids: Tensor | None = None       # [N] int64
    seq_log_likelihood: Tensor | None = None  # [N]
    extras: dict = field(default_factory=dict)  # anything else with a leading N axis

    def __post_init__(self) -> None:
        n = self.group_ids.shape[0]
        if self.log_probs.dim() != 2 or self.log_probs.shape[0] != n:
            raise ValueError(
                f"Rollout.log_probs must be [N, T] with N={n}; got {tuple(self.log_probs.shape)}"
            )
        if self.mask.shape != self.log_probs.shape:
            raise ValueError(
                f"Rollout.mask {tuple(self.mask.shape)} must match log_probs {tuple(self.log_probs.shape)}"
            )
        if len(self.conds) != n:
            raise ValueError(f"Rollout.conds has {len(self.conds)} entries for N={n} samples")

    def __len__(self) -> int:
        return self.group_ids.shape[0]

    @property
    def num_positions(self) -> int:
        return self.log_probs.shape[1]

    def select(self, idx: Tensor) -> "Rollout":
        """The sub-rollout of samples `idx` (a 1-D index tensor)."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        return replace(self, **{f.name: select_items(getattr(self, f.name), idx) for f in fields(self)})

    @staticmethod
    def concat(parts: list["Rollout"]) -> "Rollout":
        return Rollout(**{f.name: concat_items([getattr(p, f.name) for p in parts]) for f in fields(Rollout)})


@runtime_checkable
class Policy(Protocol):
    """What the trainer needs from a modality adapter.

    Optional members, used when present:
      - `reference_kl(rollout, positions) -> [n, len]`: the adapter's own KL to the reference
        (flows: Gaussian mean KL); else `ref_log_prob(rollout, positions)` with a core k1/k2/k3 estimator.
      - `state_dict_trainable() / load_state_dict_trainable(sd)` and `save_pretrained(dir)`:
        checkpoint and export in the ecosystem's format.
      - `train() / eval()`: mode switches.
    """

    time_chunk: int | None          # positions per backward pass; None = all at once

    def sample(self, batch: SampleBatch) -> Rollout: ...

    def log_prob(self, rollout: Rollout, positions: slice) -> Tensor: ...  # [n, len(positions)]

    def trainable_parameters(self) -> Iterable[torch.nn.Parameter]: ...
