"""A character vocabulary for the toy worlds: `[PAD]`, `[MASK]`, then one token per character."""

from __future__ import annotations

import torch
from torch import Tensor

PAD, MASK = 0, 1


class CharVocab:
    """Encodes prompts and decodes completions character by character (ids 0 and 1 are PAD and MASK)."""

    def __init__(self, alphabet: str):
        if len(set(alphabet)) != len(alphabet) or not alphabet:
            raise ValueError(f"vocab alphabet must be non-empty with distinct characters, got {alphabet!r}")
        self.alphabet = alphabet
        self.index = {c: i + 2 for i, c in enumerate(alphabet)}

    def __len__(self) -> int:
        return len(self.alphabet) + 2

    def encode(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        """Prompts -> ([N, P] ids left-padded with PAD, [N, P] attention mask)."""
        for t in texts:
            bad = sorted(set(str(t)) - set(self.index))
            if bad:
                raise ValueError(f"prompt {t!r} has characters {bad} outside the vocab alphabet {self.alphabet!r}")
        width = max((len(str(t)) for t in texts), default=0)
        ids = torch.full((len(texts), width), PAD, dtype=torch.long)
        for i, t in enumerate(texts):
            t = str(t)
            if t:
                ids[i, width - len(t):] = torch.tensor([self.index[c] for c in t])
        return ids, ids != PAD

    def decode(self, ids: Tensor) -> list[str]:
        """[N, L] completion ids -> strings (PAD and MASK dropped)."""
        return ["".join(self.alphabet[i - 2] for i in row.tolist() if i >= 2) for row in ids]
