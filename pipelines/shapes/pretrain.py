"""Pretrains the shapes world's tiny SD3 on rendered images with rectified-flow matching (CPU, minutes).

Stages, all seeded (`--seed`), each with a progress bar, logged to `<out>/log.jsonl`:

1. render `--images` pictures of training prompts (`prompts_train.txt`; the three categories equally
   often) with the renderer;
2. train the `AutoencoderKL` as an autoencoder (MSE + a small KL), encode the data set once, and set the
   VAE's `shift_factor` / `scaling_factor` to the latents' mean and 1/std (what the pipeline undoes);
3. train the `SD3Transformer2DModel` and both CLIP text encoders jointly with SD3's flow matching
   (Esser et al., 2024; Liu et al., 2022, rectified flow): x_s = (1 - s) x0 + s noise, target
   v = noise - x0, s logit-normal (SD3's default) then shifted like the scheduler, timestep = 1000 s,
   with caption dropout (the empty prompt, which is what the pipeline's classifier-free guidance uses
   as negative prompt); prompts are embedded by the pipeline's own `encode_prompt`, so training sees
   exactly the conditioning sampling does. An EMA of the weights is what gets saved.

Each `--save-every` steps and at the end, the EMA model goes to `<out>/step_<k>/` and `<out>/final/`
in `save_pretrained` layout, loadable with `StableDiffusion3Pipeline.from_pretrained`, together with
its strict / partial accuracy on a fixed sample of training prompts.

    python -m mmgrpo.pipelines.shapes.pretrain --out runs/shapes_base
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from mmgrpo.pipelines.shapes import MAX_SEQUENCE_LENGTH, load_pipeline, load_prompts
from mmgrpo.pipelines.shapes.captions import KINDS, mislabel_scene
from mmgrpo.pipelines.shapes.grammar import category
from mmgrpo.pipelines.shapes.model import ModelSize, build_pipeline, count_parameters
from mmgrpo.pipelines.shapes.render import render, to_tensor
from mmgrpo.pipelines.shapes.tokenizer import write_tokenizer_files
from mmgrpo.rewards.image.shapes import CATEGORIES, ShapesPrompt, format_prompt, parse_prompt


def balanced_prompts(prompts: list[str], n: int, rng: random.Random) -> list[str]:
    """`n` prompts drawn with each category equally likely, then uniformly within the category."""
    by_cat = {c: [p for p in prompts if category(p) == c] for c in CATEGORIES}
    cats = [c for c in CATEGORIES if by_cat[c]]
    return [rng.choice(by_cat[rng.choice(cats)]) for _ in range(n)]


def scene_text(scene: ShapesPrompt) -> str:
    """A prompt the verifier can check a rendered scene against: its canonical text, or, for a relation
    scene with an extra object (which the language cannot say), its objects joined by "and"."""
    if scene.relation is not None and len(scene.phrases) > 2:
        scene = ShapesPrompt(scene.phrases)
    return format_prompt(scene)


def render_dataset(prompts: list[str], n: int, seed: int, caption_noise: float = 0.0,
                   return_scenes: bool = False, caption_error: str = "attribute"):
    """(images uint8 [n,3,H,W], their captions), each image rendered with its own seed.

    With `caption_noise` > 0 an image shows `captions.mislabel_scene(caption, caption_noise, kind=caption_error)`,
    its caption being the prompt it was drawn for (so the model learns mode-choice errors); `return_scenes`
    also returns texts of what the images really show (`scene_text`, for the verifier's check of the VAE)."""
    rng = random.Random(seed)
    chosen = balanced_prompts(prompts, n, rng)
    seeds = [rng.randrange(2**31) for _ in range(n)]
    noise_rng = random.Random(seed + 7)          # apart from rng: caption_noise=0 gives the v1 data exactly
    scenes = ([mislabel_scene(p, caption_noise, noise_rng, caption_error) for p in chosen] if caption_noise > 0
              else [parse_prompt(p) for p in chosen])
    images = [render(p, s) for p, s in tqdm(zip(scenes, seeds), total=n, desc="render", mininterval=2)]
    scenes = [scene_text(sc) for sc in scenes]
    images = (to_tensor(images) * 255).round().to(torch.uint8)
    return (images, chosen, scenes) if return_scenes else (images, chosen)


def to_model_range(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 [B,3,H,W] -> float32 in [-1, 1] (what `VaeImageProcessor` feeds the VAE)."""
    return images_u8.float() / 127.5 - 1.0


def train_vae(vae, images: torch.Tensor, steps: int, batch: int, lr: float, kl_weight: float,
              gen: torch.Generator, log) -> None:
    """Autoencoder training: per-pixel MSE of the reconstruction from a posterior sample + kl_weight * KL."""
    vae.train()
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    bar = tqdm(range(steps), desc="vae", mininterval=2)
    for step in bar:
        idx = torch.randint(0, images.shape[0], (batch,), generator=gen)
        x = to_model_range(images[idx])  # [B,3,H,W]
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
        recon = vae.decode(z).sample
        mse = F.mse_loss(recon, x)
        kl = post.kl().mean() / x[0].numel()  # per pixel, like the MSE
        loss = mse + kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for g in opt.param_groups:  # cosine decay
            g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * (step + 1) / steps))
        if step % 50 == 0 or step == steps - 1:
            bar.set_postfix(mse=f"{mse.item():.4f}")
            log({"stage": "vae", "step": step, "mse": mse.item(), "kl": kl.item()})
    vae.eval()


@torch.no_grad()
def encode_dataset(vae, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Posterior means of all images: [M, C, h, w] float32 (unscaled)."""
    return torch.cat([vae.encode(to_model_range(images[i:i + batch])).latent_dist.mean
                      for i in tqdm(range(0, images.shape[0], batch), desc="encode", mininterval=2)])


@torch.no_grad()
def vae_reconstruction_accuracy(vae, images: torch.Tensor, prompts: list[str]) -> float:
    """Strict verifier accuracy on VAE reconstructions of rendered images (an upper bound for the model)."""
    from mmgrpo.rewards.image.shapes import verify

    recon = vae.decode(vae.encode(to_model_range(images)).latent_dist.mean).sample  # [B,3,H,W] in ~[-1,1]
    verdicts = verify((recon / 2 + 0.5).clamp(0, 1), prompts)
    return sum(v.strict for v in verdicts) / len(verdicts)


def sample_sigmas(n: int, shift: float, gen: torch.Generator) -> torch.Tensor:
    """Noise levels s in (0,1): logit-normal(0, 1) (SD3), then s -> shift s / (1 + (shift - 1) s). [n]"""
    u = torch.sigmoid(torch.randn(n, generator=gen))
    return shift * u / (1 + (shift - 1) * u)


def model_guidance_target(u: torch.Tensor, v_cond: torch.Tensor, v_uncond: torch.Tensor, w: float) -> torch.Tensor:
    """Model-guidance target (Tang et al. 2025, "diffusion without classifier-free guidance"):
    u + w * sg(v_cond - v_uncond). Its fixed point is v_cond = E[u] + (E[u|c] - E[u]) / (1 - w), i.e. the
    conditional sampled without CFG behaves like CFG at scale 1 / (1 - w). w = 0 is plain flow matching."""
    if not 0.0 <= w < 1.0:
        raise ValueError(f"--model-guidance must be in [0, 1) (CFG-equivalent scale 1/(1-w)); got {w}")
    return u + w * (v_cond - v_uncond).detach()


def flow_matching_loss(pipe, latents: torch.Tensor, prompts: list[str], shift: float,
                       gen: torch.Generator, model_guidance: float = 0.0) -> torch.Tensor:
    """SD3 flow-matching loss for scaled latents x0 [B,C,h,w]: mean of (v_pred - target)^2 with target
    noise - x0, or its model-guidance version (`model_guidance_target`) when model_guidance > 0."""
    prompt_embeds, _, pooled, _ = pipe.encode_prompt(
        prompt=prompts, prompt_2=None, prompt_3=None, do_classifier_free_guidance=False,
        max_sequence_length=MAX_SEQUENCE_LENGTH, device=latents.device,
    )  # [B, L, D], [B, P]
    noise = torch.randn(latents.shape, generator=gen)  # [B,C,h,w]
    sigma = sample_sigmas(latents.shape[0], shift, gen)  # [B]
    s = sigma.view(-1, *([1] * (latents.ndim - 1)))
    x_t = (1 - s) * latents + s * noise
    v = pipe.transformer(hidden_states=x_t, timestep=sigma * 1000.0, encoder_hidden_states=prompt_embeds,
                         pooled_projections=pooled, return_dict=False)[0]
    target = noise - latents
    if model_guidance > 0:
        with torch.no_grad():
            null_embeds, _, null_pooled, _ = pipe.encode_prompt(
                prompt=[""] * len(prompts), prompt_2=None, prompt_3=None, do_classifier_free_guidance=False,
                max_sequence_length=MAX_SEQUENCE_LENGTH, device=latents.device,
            )
            v_null = pipe.transformer(hidden_states=x_t, timestep=sigma * 1000.0, encoder_hidden_states=null_embeds,
                                      pooled_projections=null_pooled, return_dict=False)[0]
        target = model_guidance_target(target, v.detach(), v_null, model_guidance)
    return F.mse_loss(v.float(), target.float())


class EMA:
    """Exponential moving average of parameters, with the usual warm-up decay min(d, (1+k)/(10+k))."""

    def __init__(self, modules: dict, decay: float):
        self.decay = decay
        self.shadow = {n: copy.deepcopy(m).eval().requires_grad_(False) for n, m in modules.items()}
        self.modules = modules
        self.k = 0

    @torch.no_grad()
    def update(self) -> None:
        d = min(self.decay, (1 + self.k) / (10 + self.k))
        self.k += 1
        for n, m in self.modules.items():
            for ps, p in zip(self.shadow[n].parameters(), m.parameters()):
                ps.lerp_(p, 1 - d)


def save_pipeline(pipe, ema: EMA, folder: Path, tokenizer_files: Path) -> None:
    """Save the pipeline with the EMA weights, and the vocab/merges files next to each tokenizer."""
    live = {name: getattr(pipe, name) for name in ema.shadow}
    try:
        for name, module in ema.shadow.items():
            setattr(pipe, name, module)
        pipe.save_pretrained(folder, safe_serialization=True)
    finally:
        for name, module in live.items():
            setattr(pipe, name, module)
    for sub in ("tokenizer", "tokenizer_2"):
        for f in ("vocab.json", "merges.txt"):
            shutil.copy(tokenizer_files / f, folder / sub / f)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="output folder (checkpoints, log.jsonl)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 beats 2 on a shared 2-core machine)")
    ap.add_argument("--images", type=int, default=30000, help="rendered training images")
    ap.add_argument("--vae-from", type=Path, default=None, help="reuse this trained AutoencoderKL folder (skips VAE training)")
    ap.add_argument("--init-from", type=Path, default=None,
                    help="start the transformer and text encoders from this saved pipeline (continued training)")
    ap.add_argument("--latent-channels", type=int, default=ModelSize.latent_channels)
    ap.add_argument("--vae-channels", type=int, nargs="+", default=list(ModelSize.vae_channels),
                    help="VAE block widths (3 blocks: 4x downsampling, 8x8 latents)")
    ap.add_argument("--patch-size", type=int, default=ModelSize.patch_size)
    ap.add_argument("--width", type=int, default=None, help="text encoder width (default ModelSize's)")
    ap.add_argument("--caption-noise", type=float, default=0.0,
                    help="share of training images whose caption is wrong in its category's attribute "
                         "(captions.mislabel_scene): the base's errors become mode choices")
    ap.add_argument("--caption-error", choices=KINDS, default="attribute",
                    help="how a wrong caption is wrong: 'attribute' (its category's attribute) or 'extra' "
                         "(the image shows one object the caption omits)")
    ap.add_argument("--categories", nargs="+", choices=CATEGORIES, default=list(CATEGORIES),
                    help="prompt categories trained on (default all three)")
    ap.add_argument("--vae-steps", type=int, default=600)
    ap.add_argument("--vae-batch", type=int, default=64)
    ap.add_argument("--vae-lr", type=float, default=2e-3)
    ap.add_argument("--kl-weight", type=float, default=1e-4)
    ap.add_argument("--steps", type=int, default=2000, help="transformer + text encoder steps")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--caption-dropout", type=float, default=0.1)
    ap.add_argument("--model-guidance", type=float, default=0.0,
                    help="model-guidance weight w in [0, 1): the CFG-free conditional learns to act like CFG at "
                         "scale 1/(1-w) (0 = plain flow matching)")
    ap.add_argument("--ema", type=float, default=0.995)
    ap.add_argument("--save-every", type=int, default=500)
    ap.add_argument("--eval-images", type=int, default=64, help="training-prompt images scored per save")
    ap.add_argument("--layers", type=int, default=ModelSize.layers)
    ap.add_argument("--heads", type=int, default=ModelSize.heads)
    ap.add_argument("--head-dim", type=int, default=ModelSize.head_dim)
    ap.add_argument("--shift", type=float, default=ModelSize.shift)
    ap.add_argument("--time-limit", type=float, default=0.0,
                    help="stop transformer training after this many minutes (0 = none; the result then depends on speed)")
    args = ap.parse_args(argv)
    if not 0.0 <= args.model_guidance < 1.0:   # checked before rendering and training, not at the first step
        ap.error(f"--model-guidance must be in [0, 1) (CFG-equivalent scale 1/(1-w)); got {args.model_guidance}")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    log_file = (out / "log.jsonl").open("a")
    t0 = time.time()

    def log(rec: dict) -> None:
        log_file.write(json.dumps({"time_s": round(time.time() - t0, 1), **rec}) + "\n")
        log_file.flush()

    log({"stage": "args", **{k: str(v) for k, v in vars(args).items()}})
    size = ModelSize(layers=args.layers, heads=args.heads, head_dim=args.head_dim, shift=args.shift,
                     latent_channels=args.latent_channels, vae_channels=tuple(args.vae_channels),
                     patch_size=args.patch_size, **({"text_width": args.width} if args.width else {}))
    tok_dir = out / "tokenizer_files"
    write_tokenizer_files(tok_dir)
    pipe = build_pipeline(size, tok_dir, seed=args.seed)
    pipe.set_progress_bar_config(disable=True)
    log({"stage": "params", **count_parameters(pipe)})
    gen = torch.Generator().manual_seed(args.seed)

    train_prompts = [p for p in load_prompts("train") if category(p) in args.categories]
    images, prompts, scenes = render_dataset(train_prompts, args.images, args.seed, args.caption_noise,
                                             return_scenes=True, caption_error=args.caption_error)
    log({"stage": "data", "mislabelled": sum(a != b for a, b in zip(prompts, scenes)), "images": len(prompts)})
    if args.vae_from:
        from diffusers import AutoencoderKL

        pipe.vae = AutoencoderKL.from_pretrained(args.vae_from)
        log({"stage": "vae", "from": str(args.vae_from)})
    else:
        train_vae(pipe.vae, images, args.vae_steps, args.vae_batch, args.vae_lr, args.kl_weight, gen, log)
    pipe.vae.eval().requires_grad_(False)
    recon = vae_reconstruction_accuracy(pipe.vae, images[:256], scenes[:256])
    log({"stage": "vae_check", "recon_strict": recon})
    tqdm.write(f"verifier accuracy on VAE reconstructions: {recon:.3f} (the model's ceiling)")
    raw = encode_dataset(pipe.vae, images)  # [M,C,h,w]
    if args.init_from:  # continued training keeps the latent scale the transformer was trained with
        shift_factor, std = pipe.vae.config.shift_factor, 1.0 / pipe.vae.config.scaling_factor
    else:
        shift_factor, std = raw.mean().item(), raw.std().item()
        pipe.vae.register_to_config(shift_factor=shift_factor, scaling_factor=1.0 / std)
    latents = (raw - shift_factor) / std  # what the transformer sees: mean 0, std 1
    log({"stage": "latents", "shift_factor": shift_factor, "scaling_factor": 1.0 / std})

    if args.init_from:  # continue from a saved pipeline's transformer and text encoders
        from diffusers import SD3Transformer2DModel
        from transformers import CLIPTextModelWithProjection

        pipe.transformer = SD3Transformer2DModel.from_pretrained(args.init_from / "transformer")
        pipe.text_encoder = CLIPTextModelWithProjection.from_pretrained(args.init_from / "text_encoder")
        pipe.text_encoder_2 = CLIPTextModelWithProjection.from_pretrained(args.init_from / "text_encoder_2")
        log({"stage": "init", "from": str(args.init_from)})
    trained = {"transformer": pipe.transformer, "text_encoder": pipe.text_encoder,
               "text_encoder_2": pipe.text_encoder_2}
    params = [p for m in trained.values() for p in m.parameters()]
    for m in trained.values():
        m.train()
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0, betas=(0.9, 0.99))
    ema = EMA(trained, args.ema)
    drop = random.Random(args.seed + 1)
    eval_rng = random.Random(args.seed + 2)
    eval_prompts = balanced_prompts(train_prompts, args.eval_images, eval_rng)
    eval_seeds = [eval_rng.randrange(2**31) for _ in eval_prompts]

    def checkpoint(tag: str, step: int) -> None:
        from mmgrpo.pipelines.shapes.evaluate import evaluate_pipeline

        folder = out / tag
        save_pipeline(pipe, ema, folder, tok_dir)
        saved = load_pipeline(folder)
        res = evaluate_pipeline(saved, eval_prompts, eval_seeds)
        log({"stage": "checkpoint", "step": step, "folder": str(folder), "train_prompts": res["overall"]})
        tqdm.write(f"{tag}: train-prompt strict {res['overall']['strict']:.3f} partial {res['overall']['partial']:.3f}")

    bar = tqdm(range(args.steps), desc="flow", mininterval=2)
    t_flow = time.time()
    done = 0
    for step in bar:
        idx = torch.randint(0, latents.shape[0], (args.batch,), generator=gen)
        batch_prompts = ["" if drop.random() < args.caption_dropout else prompts[i] for i in idx.tolist()]
        loss = flow_matching_loss(pipe, latents[idx], batch_prompts, size.shift, gen, args.model_guidance)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(params, 1.0)
        for g in opt.param_groups:  # linear warm-up, then cosine decay to 10%
            warm = min(1.0, (step + 1) / args.warmup)
            g["lr"] = args.lr * warm * (0.55 + 0.45 * math.cos(math.pi * step / args.steps))
        opt.step()
        ema.update()
        done = step + 1
        if step % 25 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
            log({"stage": "flow", "step": step, "loss": loss.item(), "grad_norm": float(gnorm)})
        if (step + 1) % args.save_every == 0 and step + 1 < args.steps:
            checkpoint(f"step_{step + 1}", step + 1)
        if args.time_limit and time.time() - t_flow > 60 * args.time_limit:
            tqdm.write(f"time limit reached after {step + 1} steps")
            break
    checkpoint("final", done)
    log({"stage": "done", "steps": done})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
