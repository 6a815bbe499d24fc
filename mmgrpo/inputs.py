"""`MethodInputs`: the one typed object of everything a registered method may read, and the `requires` check.

Every estimator, objective and aggregation mode declares at registration what it reads
(`@register("stratified", ..., requires=("stratum_ids",))`); the trainer builds one `MethodInputs` per call
site and passes exactly those fields as keyword arguments. Nothing is found by inspecting signatures, and
the names below are the only place the inputs are declared.

Fields marked "rollout" are optional per-sample / per-position fields that adapters fill when they can
(listed in their policy's `provides`); a method that requires one is refused at config time when the chosen
policy does not provide it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from torch import Tensor


@dataclass
class MethodInputs:
    """What methods may read. Tensors are gathered over all ranks for estimators, local for objectives."""

    # ---- rollout fields (optional; adapters declare them in `provides`)
    entropy: Tensor | None = None            # [N, T] per-position entropy
    token_ids: Tensor | None = None          # [N, T] int64 generated tokens
    segment_ids: Tensor | None = None        # [N, T] int64 segment (sentence, item, phase, turn) of a position
    stratum_ids: Tensor | None = None        # [N] int64 stratum of a sample within its group
    seq_log_likelihood: Tensor | None = None  # [N] summed behaviour log-likelihood
    segment_values: Tensor | None = None     # [N, T] the adapter's value estimate after position t (S14, S29, S46)
    token_flags: Tensor | None = None        # [N, T] bool positions a process reward model flagged (S7)
    # ---- always available from the rollout
    conds: list | None = None                # [N] conditions
    log_probs: Tensor | None = None          # [N, T] behaviour log-probs
    mask: Tensor | None = None               # [N, T] trainable positions
    # ---- computed by the trainer from rewards
    raw_rewards: Tensor | None = None        # [N, K] every reward's raw score (NaN = not applicable)
    group_reward_std: Tensor | None = None   # [N] std of the combined reward within each sample's group
    advantages: Tensor | None = None         # [N] or [N, T] (aggregation modes that split by sign)
    # ---- step counts and normalizers (all ranks)
    step: int = 0                            # training step
    total_steps: int = 1                     # run length in steps
    positions: Any = None                    # slice of the time axis of this forward pass (objectives)
    num_seqs: float | None = None            # sequences with a valid position in the optimizer step, all ranks
    num_tokens: float | None = None          # valid positions in the optimizer step, all ranks
    num_samples: float | None = None         # samples in the optimizer step, all ranks
    step_counts: list | None = None          # an aggregation mode's own step-wide normalizers, all-summed

    def pick(self, names: tuple[str, ...], who: str = "method") -> dict[str, Any]:
        """{name: value} for the declared `names`; a required rollout field that is missing raises."""
        out = {}
        for n in names:
            value = getattr(self, n)
            if value is None and n in ROLLOUT_FIELDS + ALWAYS_FIELDS:
                raise ValueError(f"{who} needs the rollout field {n!r}, which this policy did not fill; "
                                 f"choose a policy whose `provides` lists it")
            out[n] = value
        return out


NAMES = tuple(f.name for f in fields(MethodInputs))
ROLLOUT_FIELDS = ("entropy", "token_ids", "segment_ids", "stratum_ids", "seq_log_likelihood", "segment_values",
                  "token_flags")
ALWAYS_FIELDS = ("conds", "log_probs", "mask")


def check_requires(kind: str, name: str, requires: tuple[str, ...]) -> tuple[str, ...]:
    """Registration-time check that every declared input exists (a typo fails at import, not mid-run)."""
    requires = tuple(requires)
    unknown = [r for r in requires if r not in NAMES]
    if unknown:
        raise ValueError(f"{kind} {name!r} declares unknown inputs {unknown}; valid inputs: {', '.join(NAMES)}")
    return requires


def rollout_field(rollout: Any, name: str) -> Any:
    """The optional field `name` of a rollout: its attribute if the Rollout class has one, else `extras[name]`.

    None when the adapter did not fill it. Fields that are not Rollout attributes travel in `rollout.extras`.
    """
    value = getattr(rollout, name, None)
    if value is None:
        value = (getattr(rollout, "extras", None) or {}).get(name)
    return value
