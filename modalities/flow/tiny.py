"""A tiny, randomly initialised but real Stable Diffusion 3 pipeline built in-process (tests, benchmarks, demo).

Like diffusers' `get_dummy_components()`: real `SD3Transformer2DModel`, `AutoencoderKL`, two
`CLIPTextModelWithProjection` + `CLIPTokenizer` (byte-level BPE with a vocabulary and merges written here, so
nothing is downloaded), `FlowMatchEulerDiscreteScheduler` with SD3's shift, and no T5 (`text_encoder_3=None`:
the pipeline then feeds zeros for the T5 half of the prompt embedding).
"""

from __future__ import annotations

import torch

# Words that become single tokens (others fall back to byte pieces); covers the toy worlds' prompts.
DEFAULT_WORDS = (
    "a an the of on in and with photo image picture painting drawing red green blue yellow black white "
    "orange purple pink gray circle square triangle star small large big left right top bottom center "
    "one two three cat dog bird tree house car sky"
).split()


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP byte -> printable unicode character map used by byte-level BPE."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def tiny_clip_tokenizer(words=DEFAULT_WORDS, model_max_length: int = 16):
    """A `CLIPTokenizer` whose vocabulary is every byte (alone and word-final) plus `words` as whole tokens."""
    from transformers import CLIPTokenizer

    chars = list(bytes_to_unicode().values())
    vocab: dict[str, int] = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars:
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    merges: list[tuple[str, str]] = []
    for w in words:
        pieces = list(w[:-1]) + [w[-1] + "</w>"]
        acc = pieces[0]
        for p in pieces[1:]:   # left-to-right merges: "r e" -> "re", "re d</w>" -> "red</w>"
            if (acc, p) not in merges:
                merges.append((acc, p))
            acc = acc + p
            vocab.setdefault(acc, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)


def tiny_sd3_components(seed: int = 0, sample_size: int = 8, patch_size: int = 1, latent_channels: int = 4,
                        num_layers: int = 1, heads: int = 2, head_dim: int = 8, text_hidden: int = 16,
                        text_layers: int = 2, vae_channels: tuple[int, ...] = (8, 8), shift: float = 3.0,
                        words=DEFAULT_WORDS, max_text_length: int = 16) -> dict:
    """The component dict for `StableDiffusion3Pipeline(**components)`.

    `sample_size` is the latent side; images are `sample_size * 2**(len(vae_channels)-1)` pixels.
    The CLIP hidden states (2 x text_hidden, concatenated) are padded to the T5 width `joint_attention_dim`
    = 2 * text_hidden by the pipeline; pooled projections are 2 x text_hidden.
    """
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    tok = tiny_clip_tokenizer(words, max_text_length)
    tok2 = tiny_clip_tokenizer(words, max_text_length)
    text_cfg = CLIPTextConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        hidden_size=text_hidden, intermediate_size=2 * text_hidden, num_attention_heads=2,
        num_hidden_layers=text_layers, vocab_size=len(tok), max_position_embeddings=max_text_length,
        projection_dim=text_hidden, hidden_act="gelu",
    )
    torch.manual_seed(seed)
    text_encoder = CLIPTextModelWithProjection(text_cfg)
    torch.manual_seed(seed + 1)
    text_encoder_2 = CLIPTextModelWithProjection(text_cfg)
    torch.manual_seed(seed + 2)
    transformer = SD3Transformer2DModel(
        sample_size=sample_size, patch_size=patch_size, in_channels=latent_channels, out_channels=latent_channels,
        num_layers=num_layers, attention_head_dim=head_dim, num_attention_heads=heads,
        joint_attention_dim=2 * text_hidden, caption_projection_dim=heads * head_dim,
        pooled_projection_dim=2 * text_hidden, pos_embed_max_size=max(sample_size // patch_size, 8),
    )
    torch.manual_seed(seed + 3)
    vae = AutoencoderKL(
        sample_size=sample_size * 2 ** (len(vae_channels) - 1), in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(vae_channels),
        up_block_types=("UpDecoderBlock2D",) * len(vae_channels),
        block_out_channels=tuple(vae_channels), layers_per_block=1, latent_channels=latent_channels,
        norm_num_groups=min(vae_channels), use_quant_conv=False, use_post_quant_conv=False,
        shift_factor=0.0609, scaling_factor=1.5035,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    return {
        "scheduler": scheduler, "text_encoder": text_encoder, "text_encoder_2": text_encoder_2,
        "text_encoder_3": None, "tokenizer": tok, "tokenizer_2": tok2, "tokenizer_3": None,
        "transformer": transformer, "vae": vae,
    }


def tiny_sd3_pipeline(seed: int = 0, sample_size: int = 8, **kwargs):
    """A `StableDiffusion3Pipeline` from `tiny_sd3_components(seed, sample_size, **kwargs)` (fp32, CPU)."""
    from diffusers import StableDiffusion3Pipeline

    pipe = StableDiffusion3Pipeline(**tiny_sd3_components(seed=seed, sample_size=sample_size, **kwargs))
    pipe.set_progress_bar_config(disable=True)
    return pipe
