"""A persistent per-prompt value tracker with KL-adaptive forgetting (S35 Single-stream Policy Optimization).

For each prompt x it keeps discounted sums S(x) = sum rho^k r, S2(x) = sum rho^k r^2 and W(x) = sum rho^k,
so v(x) = S / W is a running mean of its rewards that forgets old observations faster when the policy moved
more since x was last seen: rho = clamp(2^(-D / d_half), rho_min, rho_max).

SPO measures D as the KL between the policy now and the policy that last answered x. That needs the old
policy; here D is estimated without it as the change of the mean per-token log-likelihood of x's answers
between visits (|l_now - l_last|), a first-order proxy that is zero when the policy has not moved on x.
"""

from __future__ import annotations

import json
import math
from typing import Any


def prompt_key(cond: Any) -> str:
    """A stable string key for a condition (strings as they are, anything else as sorted JSON)."""
    return cond if isinstance(cond, str) else json.dumps(cond, sort_keys=True, default=str)


class ValueTracker:
    """v(x) = S(x) / W(x) with KL-adaptive discount; prior value `prior` with weight `prior_weight`."""

    def __init__(self, rho_min: float = 0.875, rho_max: float = 0.96, d_half: float = 0.06,
                 prior: float = 0.5, prior_weight: float = 1.0):
        if not 0.0 < rho_min <= rho_max <= 1.0:
            raise ValueError(f"need 0 < rho_min <= rho_max <= 1, got rho_min={rho_min}, rho_max={rho_max}")
        if d_half <= 0 or prior_weight < 0:
            raise ValueError(f"d_half must be > 0 and prior_weight >= 0, got {d_half}, {prior_weight}")
        self.rho_min, self.rho_max, self.d_half = rho_min, rho_max, d_half
        self.prior, self.prior_weight = prior, prior_weight
        self.stats: dict[str, list[float]] = {}          # key -> [S, S2, W, last mean log-likelihood]

    def seen(self, key: str) -> bool:
        return key in self.stats

    def value(self, key: str) -> float:
        """v(x); the prior for a prompt never seen."""
        if key not in self.stats:
            return self.prior
        s, _, w, _ = self.stats[key]
        return s / w if w > 0 else self.prior

    def variance(self, key: str) -> float:
        """Discounted variance of x's rewards (prior: Bernoulli variance of the prior value)."""
        if key not in self.stats:
            return self.prior * (1 - self.prior)
        s, s2, w, _ = self.stats[key]
        return max(s2 / w - (s / w) ** 2, 0.0) if w > 0 else self.prior * (1 - self.prior)

    def discount(self, key: str, loglik: float | None) -> float:
        """rho = clamp(2^(-D/d_half), rho_min, rho_max), D = |mean log-likelihood now - at the last visit|."""
        if key not in self.stats or loglik is None or math.isnan(self.stats[key][3]):
            return self.rho_max
        d = abs(loglik - self.stats[key][3])
        return min(self.rho_max, max(self.rho_min, 2.0 ** (-d / self.d_half)))

    def update(self, key: str, rewards: list[float], loglik: float | None = None) -> None:
        """Discount x's old observations, then add this visit's rewards."""
        if key not in self.stats:
            self.stats[key] = [self.prior * self.prior_weight, self.prior ** 2 * self.prior_weight,
                               self.prior_weight, float("nan")]
            rho = 1.0
        else:
            rho = self.discount(key, loglik)
        st = self.stats[key]
        st[0] = rho * st[0] + sum(rewards)
        st[1] = rho * st[1] + sum(r * r for r in rewards)
        st[2] = rho * st[2] + len(rewards)
        st[3] = float("nan") if loglik is None else float(loglik)

    def state_dict(self) -> dict:
        return {"stats": {k: list(v) for k, v in self.stats.items()}}

    def load_state_dict(self, sd: dict) -> None:
        self.stats = {k: list(v) for k, v in sd["stats"].items()}
