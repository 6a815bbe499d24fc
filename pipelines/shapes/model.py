"""The tiny base model of the shapes world, built from the real diffusers / transformers SD3 classes.

`StableDiffusion3Pipeline` components at toy scale: a 2x-downsampling `AutoencoderKL`
(32x32x3 <-> 16x16x8), an `SD3Transformer2DModel` (MMDiT, Esser et al., 2024) over 8x8 patches of 2x2,
two small `CLIPTextModelWithProjection` encoders sharing one `CLIPTokenizer` over the prompt
language's words, no T5 (`text_encoder_3=None`), and a `FlowMatchEulerDiscreteScheduler`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from mmgrpo.pipelines.shapes import IMAGE_SIZE
from mmgrpo.pipelines.shapes.tokenizer import MODEL_MAX_LENGTH, load_tokenizer, write_tokenizer_files


@dataclass
class ModelSize:
    """Widths and depths of the tiny SD3; the defaults are the shipped base model's."""

    vae_channels: tuple[int, ...] = (16, 32)
    """VAE block widths; n blocks = n - 1 2x downsamplings (two: 32 px -> 16x16 latents; three: 8x8)."""
    latent_channels: int = 8
    """Channels of the 16x16 latent (8: sharp enough reconstructions for the verifier)."""
    text_width: int = 64
    """Hidden width of each CLIP text encoder (the two are concatenated: joint_attention_dim = 2x)."""
    text_layers: int = 3
    """CLIP layers; the pipeline reads the penultimate hidden state."""
    text_projection: int = 32
    """Pooled projection width of each encoder (pooled_projection_dim = 2x)."""
    heads: int = 3
    """Attention heads of the transformer."""
    head_dim: int = 32
    """Width per head; the transformer's width is heads x head_dim."""
    layers: int = 4
    """Joint (MMDiT) blocks."""
    patch_size: int = 2
    """Transformer patch side in latent pixels (tokens = (latent side / patch)^2)."""
    shift: float = 1.0
    """Flow-matching timestep shift (SD3's shift; 1.0 = none, as SD3 suggests for low resolutions)."""


def make_vae(size: ModelSize):
    from diffusers import AutoencoderKL

    n = len(size.vae_channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=size.vae_channels, layers_per_block=1,
        latent_channels=size.latent_channels, norm_num_groups=8, sample_size=IMAGE_SIZE,
        scaling_factor=1.0, shift_factor=0.0, force_upcast=False, mid_block_add_attention=False,
    )


def make_text_encoder(size: ModelSize, tokenizer, seed: int):
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=size.text_width, intermediate_size=2 * size.text_width,
        num_hidden_layers=size.text_layers, num_attention_heads=4, max_position_embeddings=MODEL_MAX_LENGTH,
        projection_dim=size.text_projection, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, hidden_act="gelu",
    )
    torch.manual_seed(seed)
    return CLIPTextModelWithProjection(cfg)


def make_transformer(size: ModelSize):
    from diffusers import SD3Transformer2DModel

    latent = IMAGE_SIZE // 2 ** (len(size.vae_channels) - 1)
    return SD3Transformer2DModel(
        sample_size=latent, patch_size=size.patch_size, in_channels=size.latent_channels, num_layers=size.layers,
        attention_head_dim=size.head_dim, num_attention_heads=size.heads,
        joint_attention_dim=2 * size.text_width, caption_projection_dim=size.heads * size.head_dim,
        pooled_projection_dim=2 * size.text_projection, out_channels=size.latent_channels,
        pos_embed_max_size=latent // size.patch_size,
    )


def make_scheduler(size: ModelSize):
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=size.shift)


def build_pipeline(size: ModelSize | None = None, tokenizer_dir: Path | None = None, seed: int = 0, vae=None):
    """A randomly initialized `StableDiffusion3Pipeline` of the given size (float32, CPU).

    `tokenizer_dir` holds (or receives) the `vocab.json` / `merges.txt`; `vae` reuses a trained one.
    """
    import tempfile

    from diffusers import StableDiffusion3Pipeline

    size = size or ModelSize()
    if tokenizer_dir is None:
        tokenizer_dir = Path(tempfile.mkdtemp(prefix="shapes_tok_"))
    if not (Path(tokenizer_dir) / "vocab.json").is_file():
        write_tokenizer_files(tokenizer_dir)
    tokenizer = load_tokenizer(tokenizer_dir)
    torch.manual_seed(seed)
    transformer = make_transformer(size)
    return StableDiffusion3Pipeline(
        transformer=transformer, scheduler=make_scheduler(size), vae=vae if vae is not None else make_vae(size),
        text_encoder=make_text_encoder(size, tokenizer, seed + 1), tokenizer=tokenizer,
        text_encoder_2=make_text_encoder(size, tokenizer, seed + 2), tokenizer_2=load_tokenizer(tokenizer_dir),
        text_encoder_3=None, tokenizer_3=None,
    )


def count_parameters(pipe) -> dict[str, int]:
    """Parameter counts of the pipeline's trainable modules."""
    names = ("vae", "transformer", "text_encoder", "text_encoder_2")
    return {n: sum(p.numel() for p in getattr(pipe, n).parameters()) for n in names}
