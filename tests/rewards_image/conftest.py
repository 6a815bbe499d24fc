"""Tiny real models for the image/video reward tests: CLIP, OWLv2 and open_clip built from small configs.

The tokenizer is the real CLIP BPE (vocabulary and merges from the file the open_clip wheel ships), built
in-process with `CLIPTokenizer(vocab=..., merges=...)`; models are random but of the real classes, saved
with `save_pretrained` into a temporary directory so the rewards go through their real loading path.
"""

from __future__ import annotations

import gzip
import json
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

IMG = 32  # tiny model input resolution


def clip_bpe_tokenizer():
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


@pytest.fixture(scope="session")
def tokenizer():
    return clip_bpe_tokenizer()


def tiny_clip_config(tokenizer, projection_dim: int = 16):
    from transformers import CLIPConfig

    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    vision = dict(image_size=IMG, patch_size=8, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                  num_attention_heads=4)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory, tokenizer):
    """A tiny CLIPModel + CLIPProcessor saved in one directory (the layout of a hub CLIP repo)."""
    from transformers import CLIPImageProcessor, CLIPModel, CLIPProcessor

    d = tmp_path_factory.mktemp("tiny_clip")
    torch.manual_seed(0)
    CLIPModel(tiny_clip_config(tokenizer)).eval().save_pretrained(d)
    image_processor = CLIPImageProcessor(size={"shortest_edge": IMG}, crop_size={"height": IMG, "width": IMG})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(d)
    return str(d)


@pytest.fixture(scope="session")
def owlv2_dir(tmp_path_factory, tokenizer):
    """A tiny Owlv2ForObjectDetection + Owlv2Processor saved in one directory."""
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    d = tmp_path_factory.mktemp("tiny_owlv2")
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=16, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=0)
    vision = dict(image_size=IMG, patch_size=8, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                  num_attention_heads=4)
    torch.manual_seed(0)
    # OWLv2's class head compares patch embeddings (text hidden size) with projected queries: equal dims.
    Owlv2ForObjectDetection(Owlv2Config(text_config=text, vision_config=vision, projection_dim=32)).eval().save_pretrained(d)
    Owlv2Processor(image_processor=Owlv2ImageProcessor(size={"height": IMG, "width": IMG}),
                   tokenizer=tokenizer).save_pretrained(d)
    return str(d)


@pytest.fixture(scope="session")
def tiny_open_clip(tmp_path_factory):
    """A tiny open_clip architecture registered as 'mmgrpo-tiny-vit' and an HPS-style weights file for it."""
    import open_clip

    d = tmp_path_factory.mktemp("tiny_open_clip")
    cfg = {"embed_dim": 16,
           "vision_cfg": {"image_size": IMG, "layers": 2, "width": 32, "head_width": 8, "patch_size": 8},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 2}}
    (d / "mmgrpo-tiny-vit.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(d / "mmgrpo-tiny-vit.json")
    torch.manual_seed(0)
    model = open_clip.create_model("mmgrpo-tiny-vit", pretrained=None)
    # HPS checkpoints are saved as {"state_dict": ...} by the HPSv2 trainer.
    torch.save({"state_dict": model.state_dict()}, d / "hps_tiny.pt")
    return "mmgrpo-tiny-vit", str(d / "hps_tiny.pt")


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
