"""The denoiser behind an `MDLMPolicy`: a model spec (mask token, logit alignment) and the one forward call.

The policy reaches the network only through `token_logits`, so LLaDA-layout models (logits at position i
predict token i) and Dream-layout ones (logits at position i - 1 predict token i, the causal-LM habit kept
after the switch to bidirectional attention) differ by the spec field `shifted_logits`, never by guessing.

The toy world's denoiser is a tiny `BertForMaskedLM` built from a random config in-process: a real
transformers class that is bidirectional, has an LM head over its whole vocabulary and runs in milliseconds
on a CPU. (`DiffusionGemmaForBlockDiffusion` is an encoder-decoder over a fixed canvas with self-conditioning;
its likelihoods are not those of a whole-sequence masked denoiser, so it needs its own spec, left for later.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class ModelSpec:
    """What the policy must know about a masked denoiser's token layout."""

    mask_token_id: int           # the absorbing [MASK] token
    pad_token_id: int            # left padding of prompts (attention-masked out)
    shifted_logits: bool = False  # True (Dream): logits[:, i - 1] predict token i; False (LLaDA): logits[:, i]

    def check(self, vocab_size: int) -> None:
        for name in ("mask_token_id", "pad_token_id"):
            v = getattr(self, name)
            if not 0 <= v < vocab_size:
                raise ValueError(f"model spec {name}={v} must lie in 0..{vocab_size - 1} (the model's vocabulary)")
        if self.mask_token_id == self.pad_token_id:
            raise ValueError("model spec mask_token_id and pad_token_id must differ")


def token_logits(model: nn.Module, ids: Tensor, attention_mask: Tensor, spec: ModelSpec) -> Tensor:
    """[B, S] token ids -> [B, S, V] fp32 logits aligned so that row i scores token i (either layout).

    With shifted logits, position 0 has no predictor; it is always a prompt token (the policy requires a
    non-empty prompt), so row 0 repeats the model's row 0 only to keep the [B, S, V] shape and is never scored.
    """
    logits = model(input_ids=ids, attention_mask=attention_mask).logits.float()     # [B, S, V]
    if spec.shifted_logits:
        logits = torch.cat([logits[:, :1], logits[:, :-1]], 1)
    return logits


@dataclass
class TinyBertConfig:
    """A tiny bidirectional denoiser (`transformers.BertForMaskedLM`) built from a random initialisation."""

    hidden: int = 32             # hidden size
    layers: int = 2              # transformer layers
    heads: int = 2               # attention heads (must divide hidden)
    intermediate: int = 64       # MLP width
    max_positions: int = 64      # longest prompt + completion
    init_seed: int = 0           # seed of the random initialisation (the toy world's weights)
    init_std: float = 0.02       # std of the random weights (larger: sharper, more context-dependent predictions)

    def __post_init__(self) -> None:
        if self.hidden % self.heads:
            raise ValueError(f"model.hidden={self.hidden} must be a multiple of model.heads={self.heads}")
        if not self.init_std > 0:
            raise ValueError(f"model.init_std must be > 0, got {self.init_std}")
        for name in ("hidden", "layers", "heads", "intermediate", "max_positions"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.{name} must be >= 1, got {getattr(self, name)}")


def build_tiny_bert(cfg: TinyBertConfig, vocab_size: int, pad_token_id: int) -> nn.Module:
    """A `BertForMaskedLM` with no dropout (replayed log-probs must equal the sampled ones in train mode)."""
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(vocab_size=vocab_size, hidden_size=cfg.hidden, num_hidden_layers=cfg.layers,
                        num_attention_heads=cfg.heads, intermediate_size=cfg.intermediate,
                        max_position_embeddings=cfg.max_positions, type_vocab_size=1, pad_token_id=pad_token_id,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                        initializer_range=cfg.init_std)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.init_seed)
        model = BertForMaskedLM(config)
    return model.eval()


LORA_TARGETS = {"BertForMaskedLM": ("query", "key", "value", "dense")}
