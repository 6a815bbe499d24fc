"""The arithmetic world's task and verifier: prompts "a+b=", the answer a + b zero-padded to `width` digits.

The reward is a pure function of (completion text, prompt); it imports nothing of the adapter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import Tensor

PROBLEM = re.compile(r"^(\d+)\+(\d+)=$")


def answer(prompt: str, width: int) -> str:
    """"3+4=" -> "07" (width 2). Raises on a prompt that is not an addition problem."""
    m = PROBLEM.match(str(prompt))
    if m is None:
        raise ValueError(f"mdlm_arith prompts must look like '12+34=', got {prompt!r}")
    total = str(int(m.group(1)) + int(m.group(2)))
    if len(total) > width:
        raise ValueError(f"answer {total} of {prompt!r} needs {len(total)} digits; raise width (now {width})")
    return total.zfill(width)


def problems(digits: int, count: int, seed: int) -> list[str]:
    """`count` distinct random problems with `digits`-digit operands (for prompt files and tests)."""
    g = torch.Generator().manual_seed(seed)
    hi = 10 ** digits
    if count > hi * hi:
        raise ValueError(f"only {hi * hi} distinct {digits}-digit problems exist, asked for {count}")
    flat = torch.randperm(hi * hi, generator=g)[:count].tolist()
    return [f"{v // hi}+{v % hi}=" for v in flat]


class ArithExactMatch:
    """1 if the completion is the zero-padded sum (strict), or the fraction of correct digits (partial)."""

    name = "mdlm_arith"

    @dataclass
    class Config:
        width: int = 2  # answer digits: must equal the policy's gen_length
        mode: str = "strict"  # strict: 1 only for the exact answer; partial: fraction of correct digits

        def __post_init__(self) -> None:
            if self.mode not in ("strict", "partial"):
                raise ValueError(f"mdlm_arith mode must be 'strict' or 'partial', got {self.mode!r}")
            if self.width < 1:
                raise ValueError(f"mdlm_arith width must be >= 1, got {self.width}")

    def __init__(self, cfg: "ArithExactMatch.Config | None" = None):
        self.cfg = cfg or ArithExactMatch.Config()

    def __call__(self, outputs: list[str], conds: list, **_) -> Tensor:
        scores = []
        for text, prompt in zip(outputs, conds):
            truth = answer(prompt, self.cfg.width)
            hits = [a == b for a, b in zip(str(text).ljust(self.cfg.width), truth)]
            scores.append(float(all(hits)) if self.cfg.mode == "strict" else sum(hits) / len(truth))
        return torch.tensor(scores, dtype=torch.float32)
