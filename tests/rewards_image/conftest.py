"""Tiny real models for the image/video reward tests: CLIP, OWLv2 and open_clip built from small configs.

The builders live in `mmgrpo.rewards.image.tiny` (the benchmark uses them too): the real CLIP BPE
tokenizer, random models of the real classes saved with `save_pretrained` into a temporary directory, so
the rewards go through their real loading path.
"""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from mmgrpo.rewards.image.tiny import (  # noqa: E402  (after the offline switch)
    IMG,
    clip_bpe_tokenizer,
    make_tiny_clip,
    make_tiny_open_clip,
    make_tiny_owlv2,
)

__all__ = ["IMG", "PROMPTS", "assert_batch_invariant", "assert_reward_contract", "random_images"]


@pytest.fixture(scope="session")
def tokenizer():
    return clip_bpe_tokenizer()


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory, tokenizer):
    """A tiny CLIPModel + CLIPProcessor saved in one directory (the layout of a hub CLIP repo)."""
    return make_tiny_clip(tmp_path_factory.mktemp("tiny_clip"), tokenizer)


@pytest.fixture(scope="session")
def owlv2_dir(tmp_path_factory, tokenizer):
    """A tiny Owlv2ForObjectDetection + Owlv2Processor saved in one directory."""
    return make_tiny_owlv2(tmp_path_factory.mktemp("tiny_owlv2"), tokenizer)


@pytest.fixture(scope="session")
def tiny_open_clip(tmp_path_factory):
    """A tiny open_clip architecture registered as 'mmgrpo-tiny-vit' and an HPS-style weights file for it."""
    return make_tiny_open_clip(tmp_path_factory.mktemp("tiny_open_clip"))


def random_images(n: int, seed: int = 0, h: int = 40, w: int = 48) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, h, w, generator=g)


PROMPTS = ["a photo of a dog", "a red car on a street", "two cats", "an astronaut riding a horse",
           "a bowl of fruit", "a blue bird", "a city at night", "a photo of a cake"]


def assert_batch_invariant(reward, images, conds, atol=1e-5, **metadata):
    """Scoring all at once equals scoring one by one (the 1e-5 contract of every reward)."""
    full = reward(images, conds, **metadata)
    singles = []
    for i in range(len(conds)):
        meta_i = {k: v[i : i + 1] for k, v in metadata.items()}
        singles.append(reward(images[i : i + 1], conds[i : i + 1], **meta_i))
    singles = torch.cat(singles)
    torch.testing.assert_close(full, singles, atol=atol, rtol=0, equal_nan=True)
    return full


def assert_reward_contract(reward, images, conds, **metadata):
    """Shape [N], float32, deterministic, batch-size invariant."""
    out = reward(images, conds, **metadata)
    assert out.shape == (len(conds),) and out.dtype == torch.float32
    torch.testing.assert_close(reward(images, conds, **metadata), out, atol=0, rtol=0, equal_nan=True)
    assert_batch_invariant(reward, images, conds, **metadata)
    return out
