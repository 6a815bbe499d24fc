"""The shapes world: the embedded text-to-image GRPO default (prompt grammar, renderer, tiny SD3 model).

Import-light: nothing here imports diffusers or transformers; `pretrain` and `evaluate` do.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent

IMAGE_SIZE = 32
"""Side (px) of the images the base model makes; its latents are 16x16x8 (VAE scale factor 2)."""
NUM_INFERENCE_STEPS = 10
"""Euler steps the demo samples with (and the base accuracies in README.md were measured with)."""
GUIDANCE_SCALE = 4.5
"""Classifier-free guidance scale for sampling."""
MAX_SEQUENCE_LENGTH = 1
"""`max_sequence_length` to pass to `StableDiffusion3Pipeline` (and its `encode_prompt`): the model has
no T5 encoder, the pipeline appends this many zero "T5" tokens, and the model was trained with one."""


def base_model_path() -> Path:
    """Folder of the shipped base model (`StableDiffusion3Pipeline.from_pretrained(base_model_path())`)."""
    path = HERE / "base"
    if not (path / "model_index.json").is_file():
        raise FileNotFoundError(
            f"the shapes base model is missing at {path}; regenerate it with "
            "`python -m mmgrpo.pipelines.shapes.pretrain --out <dir>` and copy <dir>/final there"
        )
    return path


def load_pipeline(path: str | Path | None = None, **kwargs):
    """`StableDiffusion3Pipeline.from_pretrained` of a shapes model (default: the shipped base model).

    The model has no T5 encoder; diffusers only loads such a folder when told so
    (`text_encoder_3=None, tokenizer_3=None`), which this passes.
    """
    from diffusers import StableDiffusion3Pipeline

    return StableDiffusion3Pipeline.from_pretrained(
        path or base_model_path(), text_encoder_3=None, tokenizer_3=None, **kwargs)


SPLITS = ("train", "eval", "demo_train", "demo_eval")


def prompts_path(split: str) -> Path:
    """The prompt file of a split: 'train' (pretraining and RL), 'eval' (held-out combinations), or the demo
    world's subsets of them, 'demo_train' / 'demo_eval' (counting and composition prompts only)."""
    if split not in SPLITS:
        raise ValueError(f"prompts_path: split must be 'train' or 'eval' (or 'demo_train' / 'demo_eval'), got {split!r}")
    return HERE / f"prompts_{split}.txt"


def load_prompts(split: str) -> list[str]:
    """The prompts of a split, one per line of its shipped file."""
    return [line.strip() for line in prompts_path(split).read_text().splitlines() if line.strip()]


def sampling_kwargs() -> dict:
    """Keyword arguments for `StableDiffusion3Pipeline.__call__` at the demo's settings."""
    return {"height": IMAGE_SIZE, "width": IMAGE_SIZE, "num_inference_steps": NUM_INFERENCE_STEPS,
            "guidance_scale": GUIDANCE_SCALE, "max_sequence_length": MAX_SEQUENCE_LENGTH}
