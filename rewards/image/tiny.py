"""Tiny random image checkpoints (CLIP, OWLv2, an open_clip ViT saved like HPS v2) for tests, benchmarks
and CPU demos: each saves a complete local folder or file that the rewards load like a real one.

The tokenizer is the real CLIP BPE (vocabulary and merges from the file the open_clip wheel ships), built
in-process with `CLIPTokenizer(vocab=..., merges=...)`; models are random but of the real classes, saved
with `save_pretrained`, so the rewards go through their real loading path. Nothing is downloaded.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any

import torch

IMG = 32
"""Input resolution (px) of the tiny vision towers."""
TINY_OPEN_CLIP = "mmgrpo-tiny-vit"
"""open_clip architecture name of the tiny HPS model (registered by `register_tiny_open_clip`)."""


def clip_bpe_tokenizer() -> Any:
    """The real CLIP tokenizer (49408 tokens) from open_clip's bundled BPE merges file."""
    import open_clip
    from open_clip.tokenizer import bytes_to_unicode
    from transformers import CLIPTokenizer

    path = os.path.join(os.path.dirname(open_clip.__file__), "bpe_simple_vocab_16e6.txt.gz")
    lines = gzip.open(path).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    merges = [tuple(m.split()) for m in lines]
    chars = list(bytes_to_unicode().values())
    vocab = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={v: i for i, v in enumerate(vocab)}, merges=merges)


def tiny_clip_config(tokenizer: Any, projection_dim: int = 16) -> Any:
    """A 2-layer, 32-wide CLIPConfig for `IMG` px images and the full CLIP vocabulary."""
    from transformers import CLIPConfig

    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    vision = dict(image_size=IMG, patch_size=8, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                  num_attention_heads=4)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)


def make_tiny_clip(folder: str | Path, tokenizer: Any = None) -> str:
    """A tiny CLIPModel + CLIPProcessor saved in `folder` (the layout of a hub CLIP repo); returns it."""
    from transformers import CLIPImageProcessor, CLIPModel, CLIPProcessor

    tokenizer = tokenizer if tokenizer is not None else clip_bpe_tokenizer()
    torch.manual_seed(0)
    CLIPModel(tiny_clip_config(tokenizer)).eval().save_pretrained(folder)
    image_processor = CLIPImageProcessor(size={"shortest_edge": IMG}, crop_size={"height": IMG, "width": IMG})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return str(folder)


def make_tiny_owlv2(folder: str | Path, tokenizer: Any = None) -> str:
    """A tiny Owlv2ForObjectDetection + Owlv2Processor saved in `folder`; returns it."""
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    tokenizer = tokenizer if tokenizer is not None else clip_bpe_tokenizer()
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=16, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=0)
    vision = dict(image_size=IMG, patch_size=8, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                  num_attention_heads=4)
    torch.manual_seed(0)
    # OWLv2's class head compares patch embeddings (text hidden size) with projected queries: equal dims.
    config = Owlv2Config(text_config=text, vision_config=vision, projection_dim=32)
    Owlv2ForObjectDetection(config).eval().save_pretrained(folder)
    Owlv2Processor(image_processor=Owlv2ImageProcessor(size={"height": IMG, "width": IMG}),
                   tokenizer=tokenizer).save_pretrained(folder)
    return str(folder)


def register_tiny_open_clip(folder: str | Path) -> str:
    """Make open_clip know the `TINY_OPEN_CLIP` architecture saved in `folder` (once per process)."""
    import open_clip

    open_clip.add_model_config(Path(folder) / f"{TINY_OPEN_CLIP}.json")
    return TINY_OPEN_CLIP


def make_tiny_open_clip(folder: str | Path) -> tuple[str, str]:
    """A tiny open_clip ViT architecture (config JSON, registered in this process) and an HPS-style
    weights file for it, in `folder`; returns (architecture name, weights path).

    Another process must call `register_tiny_open_clip(folder)` before building `HPSv2Reward` with it.
    """
    import open_clip

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"embed_dim": 16,
           "vision_cfg": {"image_size": IMG, "layers": 2, "width": 32, "head_width": 8, "patch_size": 8},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 2}}
    (folder / f"{TINY_OPEN_CLIP}.json").write_text(json.dumps(cfg))
    name = register_tiny_open_clip(folder)
    torch.manual_seed(0)
    model = open_clip.create_model(name, pretrained=None)
    # HPS checkpoints are saved as {"state_dict": ...} by the HPSv2 trainer.
    torch.save({"state_dict": model.state_dict()}, folder / "hps_tiny.pt")
    return name, str(folder / "hps_tiny.pt")


def make_tiny_aesthetic_head(path: str | Path, input_size: int = 16) -> str:
    """A random LAION aesthetic MLP head for `input_size`-d CLIP features (the tiny CLIP's 16) at `path`."""
    from .aesthetic import AestheticMLP

    torch.manual_seed(0)
    torch.save(AestheticMLP(input_size).state_dict(), path)
    return str(path)
