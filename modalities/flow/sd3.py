"""Stable Diffusion 3 / 3.5 for the flow adapter: its conditioning dataclass and transformer call, nothing else.

Everything else (text encoding, sigmas, VAE scaling, LoRA export) is delegated to the diffusers pipeline's own
components; `FlowPolicy` drives them through the small interface of `SD3Spec`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor

# SD3 joint-attention projections (image stream and the added text-context stream), as Flow-GRPO targets.
SD3_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")


@dataclass
class SD3Cond:
    """SD3 text conditioning for B samples (negative embeddings present only when CFG is used)."""

    prompt_embeds: Tensor                              # [B, L, D] CLIP-L/G (+ T5) sequence
    pooled_prompt_embeds: Tensor                       # [B, P] pooled CLIP-L/G
    negative_prompt_embeds: Tensor | None = None       # [B, L, D]
    negative_pooled_prompt_embeds: Tensor | None = None  # [B, P]

    def __len__(self) -> int:
        return self.prompt_embeds.shape[0]

    def select(self, idx: Tensor) -> "SD3Cond":
        idx = idx.to(self.prompt_embeds.device)
        return SD3Cond(**{f.name: (None if getattr(self, f.name) is None else getattr(self, f.name)[idx])
                          for f in fields(self)})

    @staticmethod
    def concat(parts: list["SD3Cond"]) -> "SD3Cond":
        return SD3Cond(**{f.name: (None if getattr(parts[0], f.name) is None
                                   else torch.cat([getattr(p, f.name) for p in parts]))
                          for f in fields(SD3Cond)})

    def for_cfg(self) -> "SD3Cond":
        """The 2B conditioning `[negative; positive]` for one batched classifier-free-guidance forward."""
        if self.negative_prompt_embeds is None:
            raise ValueError("classifier-free guidance needs negative prompt embeddings; encode with cfg=True")
        return SD3Cond(torch.cat([self.negative_prompt_embeds, self.prompt_embeds]),
                       torch.cat([self.negative_pooled_prompt_embeds, self.pooled_prompt_embeds]))

    def to(self, device) -> "SD3Cond":
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)
                                if getattr(self, f.name) is not None})


class SD3Spec:
    """Maps prompts to `SD3Cond` and runs `SD3Transformer2DModel` on latents `[B, C, H, W]` at sigmas `[B]`."""

    lora_targets = SD3_LORA_TARGETS

    def __init__(self, pipe, max_sequence_length: int = 256):
        from diffusers import StableDiffusion3Pipeline

        if not isinstance(pipe, StableDiffusion3Pipeline):
            raise TypeError(f"model 'sd3' needs a StableDiffusion3Pipeline; got {type(pipe).__name__}")
        self.pipe = pipe
        self.max_sequence_length = max_sequence_length

    @staticmethod
    def load(pretrained: str, dtype: torch.dtype):
        """`StableDiffusion3Pipeline.from_pretrained`, accepting pipelines saved without T5 (tiny / toy worlds)."""
        from diffusers import StableDiffusion3Pipeline

        index = StableDiffusion3Pipeline.load_config(pretrained)
        # diffusers writes a component that was None as [null, null] but then refuses to load it back unless
        # it is passed explicitly as None.
        absent = {name: None for name in ("text_encoder_3", "tokenizer_3")
                  if index.get(name) in (None, [None, None], (None, None))}
        return StableDiffusion3Pipeline.from_pretrained(pretrained, torch_dtype=dtype, **absent)

    @property
    def transformer(self):
        return self.pipe.transformer

    def latent_shape(self, resolution: int) -> tuple[int, ...]:
        """`(C, h, w)` of the latent for a square image of `resolution` pixels."""
        step = self.pipe.vae_scale_factor * self.pipe.patch_size
        if resolution % step:
            raise ValueError(f"resolution must be a multiple of vae_scale_factor * patch_size = {step}; got {resolution}")
        side = resolution // self.pipe.vae_scale_factor
        return (self.pipe.transformer.config.in_channels, side, side)

    def scheduler_kwargs(self, latent_shape: tuple[int, ...]) -> dict:
        """`set_timesteps` kwargs: the resolution-dependent shift `mu` when the scheduler shifts dynamically."""
        sched = self.pipe.scheduler.config
        if not sched.get("use_dynamic_shifting", False):
            return {}
        from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import calculate_shift

        p = self.pipe.transformer.config.patch_size
        seq = (latent_shape[-2] // p) * (latent_shape[-1] // p)
        return {"mu": calculate_shift(seq, sched.get("base_image_seq_len", 256), sched.get("max_image_seq_len", 4096),
                                      sched.get("base_shift", 0.5), sched.get("max_shift", 1.16))}

    @torch.no_grad()
    def encode(self, prompts: list[str], cfg: bool, device) -> SD3Cond:
        """Prompt embeddings through the pipeline's own `encode_prompt` (negative prompt "" when `cfg`)."""
        pe, npe, pooled, npooled = self.pipe.encode_prompt(
            prompt=prompts, prompt_2=None, prompt_3=None, device=device, num_images_per_prompt=1,
            do_classifier_free_guidance=cfg, max_sequence_length=self.max_sequence_length,
        )
        return SD3Cond(pe, pooled, npe if cfg else None, npooled if cfg else None)

    def predict_velocity(self, transformer, latents: Tensor, sigma: Tensor, cond: SD3Cond) -> Tensor:
        """Velocity `[B, C, H, W]` (model dtype); the transformer's timestep is `sigma * num_train_timesteps`."""
        t = sigma * self.pipe.scheduler.config.num_train_timesteps          # [B]
        return transformer(hidden_states=latents, timestep=t, encoder_hidden_states=cond.prompt_embeds,
                           pooled_projections=cond.pooled_prompt_embeds, return_dict=False)[0]

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        """Latents `[N, C, h, w]` -> images `[N, 3, H, W]` float32 in [0, 1], with the VAE's scaling and shift."""
        vae = self.pipe.vae
        z = latents / vae.config.scaling_factor + vae.config.shift_factor
        img = vae.decode(z.to(vae.dtype), return_dict=False)[0]
        return (img.float() / 2 + 0.5).clamp(0, 1)

    def save_lora(self, directory: str, lora_state_dict: dict, adapter_config: dict) -> None:
        """Write the transformer LoRA the way `StableDiffusion3Pipeline.load_lora_weights(directory)` reads it."""
        type(self.pipe).save_lora_weights(directory, transformer_lora_layers=lora_state_dict,
                                          transformer_lora_adapter_metadata=adapter_config)

    def read_lora(self, path: str) -> dict:
        """A saved transformer LoRA as a peft state dict (keys without the `transformer.` prefix)."""
        sd = type(self.pipe).lora_state_dict(path)
        sd = sd[0] if isinstance(sd, tuple) else sd
        prefix = "transformer."
        return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
