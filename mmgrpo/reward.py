"""The `Reward` protocol and how the trainer calls rewards safely (names in errors, NaN bookkeeping)."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class Reward(Protocol):
    """A reward: `reward(outputs, conds, group_ids=..., **metadata) -> Tensor [N]` float32.

    NaN means "not applicable" for that sample. Groupwise rewards set `groupwise = True` and are
    always shown whole groups. `name` identifies it in metrics and error messages. Optionally,
    `reads_media` says where it reads decoded images/audio, e.g. `("outputs:images",)` or `()`, so the
    reward server decodes only those (`mmgrpo.rewards.payload.media_reads`).
    """

    name: str

    def __call__(self, outputs: Any, conds: list, **kwargs: Any) -> Tensor: ...


class RewardError(RuntimeError):
    """A reward raised or returned something malformed; the message names the reward."""


def call_reward(reward: Any, outputs: Any, conds: list, group_ids: Tensor, **metadata: Any) -> Tensor:
    """Call a reward and check its result: float32 `[N]` on the CPU, or a `RewardError` naming it."""
    name = getattr(reward, "name", None) or getattr(reward, "__name__", type(reward).__name__)
    n = len(conds)
    try:
        out = reward(outputs, conds, group_ids=group_ids, **metadata)
    except Exception as exc:  # noqa: BLE001 - re-raised with the reward's name
        raise RewardError(f"reward {name!r} raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(out, Tensor):
        try:
            out = torch.tensor([float("nan") if v is None else float(v) for v in out])
        except Exception as exc:  # noqa: BLE001
            raise RewardError(
                f"reward {name!r} returned {type(out).__name__}; expected a float tensor of shape [{n}]"
            ) from exc
    out = out.detach().float().cpu().reshape(-1)
    if out.shape[0] != n:
        raise RewardError(f"reward {name!r} returned {out.shape[0]} scores for {n} samples")
    return out


def combine_rewards(raw: Tensor, weights: Tensor | list[float] | None = None, nan_as: float | None = None) -> Tensor:
    """The one way rewards combine: `sum_k w_k r_k` over raw scores `[N, K]` -> `[N]`.

    The one NaN rule: a NaN member score ("not applicable") makes the sample's sum NaN, so the sample is
    left out of training and counted, unless `nan_as` gives the value a NaN member counts as. Used by the
    trainer, the collectors and the `weighted_sum` reward alike.
    """
    raw = raw.float()
    w = torch.ones(raw.shape[1]) if weights is None else torch.as_tensor(weights, dtype=torch.float32)
    if nan_as is not None:
        raw = torch.where(torch.isnan(raw), torch.full_like(raw, nan_as), raw)
    return (raw * w.to(raw.device)).sum(1)                       # NaN propagates: NaN * w = NaN
