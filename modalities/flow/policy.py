"""`FlowPolicy`: GRPO sampling and replay for flow-matching text-to-image models (Flow-GRPO and variants).

A trajectory runs `num_steps` denoising steps with the pipeline's own sigmas (`scheduler.set_timesteps`, shift
included). The schedule (`schedules.py`) picks the stochastic steps; each is one time position whose log-prob
is the SDE step's Gaussian log-density (`sde.py`). The rollout stores, per trained position, the latent before
and after the step, the sigmas and the prompt embeddings, so `log_prob` recomputes exactly the requested
positions with the current LoRA weights. The model itself is reached only through a small spec (`sd3.py`):
`encode(prompts) -> cond`, `predict_velocity(transformer, latents, sigma, cond) -> v`, `decode(latents)`.

References: Flow-GRPO (Liu et al. 2025) for the SDE, CFG in training, LoRA on attention projections and the
reference KL; Flow-GRPO-Fast / MixGRPO for windowed SDE; DanceGRPO for shared group noise.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import Tensor

from mmgrpo.policy import PolicyBase, StepOutput
from mmgrpo.registry import Registry
from mmgrpo.rollout import Rollout, SampleBatch, concat_items, select_items
from mmgrpo.schema import bounded

from . import schedules as schedules_mod
from . import sde as sde_mod

# Model specs by name, imported lazily ("module:Class").
MODELS: Registry[str] = Registry("flow model")
MODELS.add("sd3", "mmgrpo.modalities.flow.sd3:SD3Spec", "Stable Diffusion 3 / 3.5 (StableDiffusion3Pipeline)")

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _model_spec_class(name: str):
    module, attr = MODELS.get(name).split(":")
    return getattr(importlib.import_module(module), attr)


@dataclass
class NoiseSubspaceConfig:
    """Low-dimensional exploration of the SDE steps (`sde.NoiseSubspace`): noise restricted to a subspace of
    the latent's spatial axes, with the exact log-density of the projected Gaussian."""

    # full (every latent dimension, the plain SDE), block (block-constant noise) or lowfreq (lowest DCT frequencies)
    kind: str = "full"
    # latent pixels per block side (block) / frequency reduction per axis (lowfreq): k = C*(H/f)*(W/f) noise
    # dimensions; one integer for every step, or a list with one factor per denoising step (1 = full there)
    factor: int | list[int] = bounded(1, ge=1)
    # amplitude: per-latent-pixel noise variance as the full step's; projection: the full noise projected
    gain: str = "amplitude"

    def for_step(self, step: int) -> "sde_mod.NoiseSubspace | None":
        """The subspace of denoising step `step`, or None where the step explores every dimension."""
        if self.kind == "full":
            return None
        factor = self.factor[step] if isinstance(self.factor, (list, tuple)) else self.factor
        return sde_mod.NoiseSubspace(self.kind, int(factor), self.gain)


@dataclass
class ForwardProcessConfig:
    """What `forward_process` draws for the forward-process objectives (`mmgrpo.objectives`: awm, nft)."""

    # fresh (eps, t) draws per sample and update (AWM: several t per sample)
    times_per_sample: int = bounded(2, ge=1)
    # density of t ~ t^bias on [t_min, t_max]: 0 uniform, 1 linear towards high noise
    high_noise_bias: float = bounded(1.0, ge=0)
    # t is drawn from [t_min, t_max] (0 = clean, 1 = pure noise)
    t_min: float = bounded(0.02, ge=0, lt=1)
    # upper end of the t range; must exceed t_min
    t_max: float = bounded(0.98, gt=0, le=1)
    # common random numbers: the same (eps, t) for every member of a group (drawn from its group seed)
    shared_noise: bool = False
    # DiffusionNFT's EMA old policy, updated once per training step with decay min(ema_rate * step, ema_cap)
    ema_rate: float = bounded(0.001, ge=0, le=1)
    # upper bound of the EMA decay
    ema_cap: float = bounded(0.5, ge=0, le=1)

    def __post_init__(self) -> None:
        if self.t_min >= self.t_max:
            raise ValueError(f"t_min={self.t_min} must be below t_max={self.t_max}")


@dataclass
class FlowState:
    """Replay data of a flow rollout; every tensor has the sample axis first."""

    latents: Tensor        # [N, T, *latent] fp32: the latent entering each trained step
    next_latents: Tensor   # [N, T, *latent] fp32: the sampled latent after it (the "action")
    sigmas: Tensor         # [N, T] fp32
    sigmas_next: Tensor    # [N, T] fp32
    steps: Tensor          # [N, T] int64: denoising step index of each position
    cond: Any              # the model's conditioning dataclass (select/concat), N samples
    final_latents: Tensor  # [N, *latent] fp32: the clean latent that was decoded
    group_seeds: Tensor    # [N] int64: the batch's group seeds (common random numbers of forward_process)

    def select(self, idx: Tensor) -> "FlowState":
        return FlowState(**{f.name: select_items(getattr(self, f.name), idx) for f in fields(self)})

    @staticmethod
    def concat(parts: list["FlowState"]) -> "FlowState":
        return FlowState(**{f.name: concat_items([getattr(p, f.name) for p in parts]) for f in fields(FlowState)})


class FlowPolicy(PolicyBase):
    """Flow-matching policy over a diffusers pipeline with a trainable LoRA (see module docstring)."""

    @dataclass
    class Config:
        # diffusers pipeline directory or hub id, loaded with the model's pipeline class `from_pretrained`
        pretrained: str = "stabilityai/stable-diffusion-3.5-medium"
        # model spec: which pipeline family (registered in `MODELS`; "sd3")
        model: str = "sd3"
        # weights dtype for the frozen model: float32, bfloat16 or float16 (step math is always fp32)
        dtype: str = "bfloat16"
        # image side in pixels (square); must be a multiple of vae_scale_factor * patch_size
        resolution: int = bounded(512, ge=1)
        # denoising steps when sampling for training (Flow-GRPO: 10)
        num_steps: int = bounded(10, ge=2)
        # denoising steps for evaluation samples (`sample(batch, evaluate=True)`, deterministic ODE)
        eval_num_steps: int = bounded(40, ge=1)
        # classifier-free guidance scale; 1.0 = no CFG (only the conditional forward)
        guidance_scale: float = bounded(4.5, ge=1)
        # apply CFG in the training forward as in sampling; must be true when guidance_scale > 1
        cfg_in_training: bool = True
        # stochastic step: flow_grpo, cps, dance (ode makes every step deterministic)
        sde: str = "flow_grpo"
        # noise level of the SDE (Flow-GRPO a ~0.7, CPS ~0.8, DanceGRPO eta ~0.3)
        noise_level: float = bounded(0.7, ge=0)
        # which steps are stochastic and trained: all (every step but the last) or window
        schedule: str = "all"
        # SDE steps per window (schedule=window; Flow-GRPO-Fast uses 1-3)
        window_size: int = bounded(2, ge=1)
        # latest window start (schedule=window); None = num_steps - 1 - window_size
        window_max_start: int | None = bounded(None, ge=0)
        # same initial noise for all members of a group (drawn from the group seed; DanceGRPO)
        shared_group_noise: bool = False
        # LoRA rank on the attention projections
        lora_rank: int = bounded(32, ge=1)
        # LoRA alpha (scale alpha / rank)
        lora_alpha: int = bounded(64, ge=1)
        # LoRA target module names; empty = the model's attention projections (SD3: to_q,k,v,out.0 + add_*)
        lora_targets: list[str] = field(default_factory=list)
        # existing LoRA to start from (a directory or .safetensors saved by `save_pretrained`); None = fresh
        lora_path: str | None = None
        # trained positions (SDE steps) per forward/backward chunk in the trainer; None = all at once
        time_chunk: int | None = bounded(1, ge=1)
        # max T5 tokens in the prompt embedding (SD3 pads the sequence to this length)
        max_sequence_length: int = bounded(256, ge=1)
        # recompute transformer activations in backward to save memory
        gradient_checkpointing: bool = False
        # where the SDE steps explore (kind full | block | lowfreq, factor, gain); the reference KL is measured
        # in the same subspace
        noise_subspace: NoiseSubspaceConfig = field(default_factory=NoiseSubspaceConfig)
        # forward-process draws (`forward_process`; the awm / nft objectives)
        forward_process: ForwardProcessConfig = field(default_factory=ForwardProcessConfig)

    def __init__(self, cfg: "FlowPolicy.Config", device: str | torch.device | None = None, *, pipe=None):
        self.cfg = cfg
        self._validate(cfg)
        dtype = _DTYPES[cfg.dtype]
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        spec_cls = _model_spec_class(cfg.model)
        if pipe is None:
            pipe = spec_cls.load(_local_or_hub(cfg.pretrained), dtype)
        pipe.to(self.device)
        if any(getattr(m, "dtype", dtype) != dtype for m in (pipe.transformer, pipe.vae)):
            pipe.to(dtype=dtype)
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe
        self.model_dtype = dtype
        self.spec = spec_cls(pipe, max_sequence_length=cfg.max_sequence_length)
        self.step_fn = sde_mod.get(cfg.sde)
        self.schedule_fn = schedules_mod.get(cfg.schedule)
        self.latent_shape = self.spec.latent_shape(cfg.resolution)
        self.time_chunk = cfg.time_chunk
        self._sigma_cache: dict[int, Tensor] = {}
        self._setup_lora()

    @classmethod
    def from_pipeline(cls, pipe, cfg: "FlowPolicy.Config", device: str | torch.device | None = None) -> "FlowPolicy":
        """Wrap an already built pipeline (tests, benchmarks, the tiny demo) instead of `from_pretrained`."""
        return cls(cfg, device=device if device is not None else pipe.device, pipe=pipe)

    # ------------------------------------------------------------------ setup
    @staticmethod
    def _validate(cfg) -> None:
        if cfg.dtype not in _DTYPES:
            raise ValueError(f"FlowPolicy.Config.dtype must be one of {sorted(_DTYPES)}; got {cfg.dtype!r}")
        if cfg.guidance_scale > 1 and not cfg.cfg_in_training:
            raise ValueError(
                f"guidance_scale={cfg.guidance_scale} samples with classifier-free guidance but "
                "cfg_in_training=False trains without it, so the recorded log-probs could never be replayed; "
                "set cfg_in_training=True, or guidance_scale=1.0 for a CFG-free recipe"
            )
        if cfg.guidance_scale < 1:
            raise ValueError(f"guidance_scale must be >= 1 (1 = no guidance); got {cfg.guidance_scale}")
        sde_mod.get(cfg.sde)
        schedules_mod.get(cfg.schedule)
        if isinstance(cfg.forward_process, dict):
            cfg.forward_process = ForwardProcessConfig(**cfg.forward_process)
        fpc = cfg.forward_process
        if fpc.times_per_sample < 1:
            raise ValueError(f"forward_process.times_per_sample must be >= 1; got {fpc.times_per_sample}")
        if not 0.0 <= fpc.t_min < fpc.t_max <= 1.0:
            raise ValueError(f"forward_process needs 0 <= t_min < t_max <= 1; got t_min={fpc.t_min}, t_max={fpc.t_max}")
        if not (0.0 <= fpc.ema_cap < 1.0 and fpc.ema_rate >= 0.0):
            raise ValueError(f"forward_process needs 0 <= ema_cap < 1 and ema_rate >= 0; got ema_cap={fpc.ema_cap}, "
                             f"ema_rate={fpc.ema_rate}")
        ns = cfg.noise_subspace
        if isinstance(ns, dict):
            cfg.noise_subspace = ns = NoiseSubspaceConfig(**ns)
        if ns.kind != "full":
            factors = ns.factor if isinstance(ns.factor, (list, tuple)) else [ns.factor]
            if isinstance(ns.factor, (list, tuple)) and len(factors) != cfg.num_steps:
                raise ValueError(f"noise_subspace.factor lists one factor per denoising step: {cfg.num_steps} "
                                 f"(num_steps); got {len(factors)}")
            for f in factors:
                sde_mod.NoiseSubspace(ns.kind, f, ns.gain)          # validates kind, factor, gain
        elif ns.factor != 1:
            raise ValueError("noise_subspace.factor needs noise_subspace.kind block or lowfreq (kind full "
                             f"explores every dimension); got factor {ns.factor}")
        MODELS.get(cfg.model)
        if cfg.num_steps < 2 or cfg.eval_num_steps < 1:
            raise ValueError(f"num_steps must be >= 2 and eval_num_steps >= 1; got {cfg.num_steps}, {cfg.eval_num_steps}")
        if cfg.lora_rank < 1:
            raise ValueError(f"lora_rank must be >= 1; got {cfg.lora_rank}")
        if cfg.time_chunk is not None and cfg.time_chunk < 1:
            raise ValueError(f"time_chunk must be >= 1; got {cfg.time_chunk}")
        if cfg.lora_path is not None and not os.path.exists(cfg.lora_path):
            raise FileNotFoundError(
                f"FlowPolicy.Config.lora_path {cfg.lora_path!r} does not exist; give a directory or "
                ".safetensors file written by FlowPolicy.save_pretrained, or null for a fresh LoRA"
            )

    def _setup_lora(self) -> None:
        from diffusers.training_utils import cast_training_params
        from peft import LoraConfig
        from peft.utils import set_peft_model_state_dict

        cfg, pipe = self.cfg, self.pipe
        for module in (pipe.transformer, pipe.vae, pipe.text_encoder, pipe.text_encoder_2,
                       getattr(pipe, "text_encoder_3", None)):
            if module is not None:
                module.requires_grad_(False)
                module.eval()
        targets = list(cfg.lora_targets) or list(self.spec.lora_targets)
        # Gaussian A, zero B: the LoRA starts as the identity, so the reference KL is 0 at init (Flow-GRPO).
        self.lora_config = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, init_lora_weights="gaussian",
                                      target_modules=targets)
        self.transformer.add_adapter(self.lora_config)
        cast_training_params(self.transformer, dtype=torch.float32)   # LoRA weights train in fp32
        if cfg.gradient_checkpointing:
            self.transformer.enable_gradient_checkpointing()
        if cfg.lora_path is not None:
            sd = self.spec.read_lora(cfg.lora_path)
            if not sd:
                raise ValueError(f"lora_path {cfg.lora_path!r} holds no transformer LoRA weights")
            try:
                result = set_peft_model_state_dict(self.transformer, sd, adapter_name="default")
            except RuntimeError as exc:
                raise ValueError(
                    f"LoRA at lora_path {cfg.lora_path!r} does not fit lora_rank={cfg.lora_rank} / lora_targets="
                    f"{targets}: {exc}"
                ) from exc
            unexpected = getattr(result, "unexpected_keys", [])
            if unexpected:
                raise ValueError(f"LoRA at lora_path {cfg.lora_path!r} has weights for modules outside lora_targets "
                                 f"{targets}: {unexpected[:4]}...")
        self.train()

    @property
    def transformer(self):
        return self.pipe.transformer

    # ------------------------------------------------------------------ PolicyBase
    def trainable_module(self) -> torch.nn.Module:
        """The transformer with its LoRA (the frozen VAE and text encoders stay outside the engine)."""
        return self.transformer

    def sigmas(self, num_steps: int) -> Tensor:
        """The pipeline scheduler's sigmas `[num_steps + 1]` (fp32, CPU, last = 0), shift applied."""
        if num_steps not in self._sigma_cache:
            self.pipe.scheduler.set_timesteps(num_steps, device="cpu",
                                              **self.spec.scheduler_kwargs(self.latent_shape))
            self._sigma_cache[num_steps] = self.pipe.scheduler.sigmas.detach().float().cpu().clone()
        return self._sigma_cache[num_steps]

    @staticmethod
    def _prompts(conds: list) -> list[str]:
        out = []
        for i, c in enumerate(conds):
            if isinstance(c, str):
                out.append(c)
            elif isinstance(c, dict) and isinstance(c.get("prompt"), str):
                out.append(c["prompt"])
            else:
                raise TypeError(f"condition {i} must be a prompt string or a dict with a 'prompt' string; got {c!r}")
        return out

    def _model_cond(self, cond):
        """The conditioning the transformer sees: `[negative; positive]` (2B) under CFG, else `cond` itself."""
        return cond.for_cfg() if self.cfg.guidance_scale > 1 else cond

    def _velocity(self, x: Tensor, sigma: Tensor, model_cond, where) -> Tensor:
        """Guided velocity `[B, *latent]` in fp32 at per-sample sigmas `[B]`; raises on a non-finite output.

        `model_cond` comes from `_model_cond`; `where()` describes the step for the error message.
        """
        g = self.cfg.guidance_scale
        xin, sig = x.to(self.model_dtype), sigma.to(x.device)
        # training forwards go through the prepared module (DDP / FSDP2 hooks); sampling needs no engine
        net = self.forward_module if torch.is_grad_enabled() else self.transformer
        if g > 1:
            v = self.spec.predict_velocity(net, torch.cat([xin, xin]), torch.cat([sig, sig]), model_cond).float()
            v_uncond, v_cond = v.chunk(2)
            v = v_uncond + g * (v_cond - v_uncond)
        else:
            v = self.spec.predict_velocity(net, xin, sig, model_cond).float()
        if not torch.isfinite(v).all():
            raise FloatingPointError(
                f"the transformer returned a non-finite velocity (NaN/inf) at {where()}; check the LoRA weights, "
                f"the learning rate and dtype={self.cfg.dtype}"
            )
        return v

    @torch.no_grad()
    def sample(self, batch: SampleBatch, evaluate: bool = False) -> Rollout:
        """Sample one image per condition; record per trained step log-probs `[N, T]`.

        `evaluate=True`: `eval_num_steps` deterministic ODE steps (no positions, T = 0) for evaluation images.
        """
        cfg, n = self.cfg, len(batch)
        num_steps = cfg.eval_num_steps if evaluate else cfg.num_steps
        if evaluate:
            plan = schedules_mod.StepPlan(sde=torch.zeros(n, num_steps, dtype=torch.bool),
                                          trained=torch.zeros(n, 0, dtype=torch.long))
        else:
            plan = self.schedule_fn(num_steps, batch.group_seeds, window_size=cfg.window_size,
                                    window_max_start=cfg.window_max_start)
        sigmas = self.sigmas(num_steps)                                              # [K+1]
        gens = schedules_mod.sample_generators(batch.seeds)
        # evaluation images never share noise: each (prompt, seed) pair is its own sample
        x = schedules_mod.initial_noise(self.latent_shape, gens, batch.group_seeds,
                                        cfg.shared_group_noise and not evaluate).to(self.device)  # [N, *latent]
        cond = self.spec.encode(self._prompts(batch.conds), cfg=cfg.guidance_scale > 1, device=self.device)

        model_cond = self._model_cond(cond)
        t_len = plan.num_positions
        latents = torch.empty(n, t_len, *self.latent_shape, device=self.device)      # [N, T, *latent]
        next_latents = torch.empty_like(latents)
        log_probs = torch.empty(n, t_len, device=self.device)                        # [N, T]
        position = plan.sde.long().cumsum(1) - 1                                     # [N, K] position of SDE step
        ode = sde_mod.get("ode")
        for k in range(num_steps):
            s = sigmas[k].expand(n)                                                  # [N]
            s2 = sigmas[k + 1].expand(n)
            v = self._velocity(x, s, model_cond,
                               lambda k=k: f"denoising step {k} of {num_steps} (sigma={float(sigmas[k]):.4f})")
            x_next = ode(x, v, s, s2)[0]
            idx = plan.sde[:, k].nonzero().squeeze(1)                                # samples stochastic at k
            if len(idx):
                prev, lp, _, _ = self.step_fn(x[idx], v[idx], s[idx], s2[idx], cfg.noise_level,
                                              generator=[gens[i] for i in idx.tolist()],
                                              subspace=cfg.noise_subspace.for_step(k))
                pos = position[idx, k].to(self.device)
                idx_d = idx.to(self.device)
                latents[idx_d, pos] = x[idx_d]
                next_latents[idx_d, pos] = prev
                log_probs[idx_d, pos] = lp
                x_next[idx_d] = prev
            if not torch.isfinite(x_next).all():
                raise FloatingPointError(f"non-finite latent after denoising step {k} of {num_steps}")
            x = x_next
        state = FlowState(
            latents=latents, next_latents=next_latents,
            sigmas=sigmas[plan.trained].to(self.device), sigmas_next=sigmas[plan.trained + 1].to(self.device),
            steps=plan.trained.to(self.device), cond=cond, final_latents=x,
            group_seeds=batch.group_seeds.clone(),
        )
        return Rollout(group_ids=batch.group_ids.clone(), log_probs=log_probs,
                       mask=torch.ones(n, t_len, dtype=torch.bool, device=self.device),
                       outputs=self.spec.decode(x), conds=list(batch.conds), state=state)

    def _position_indices(self, rollout: Rollout, positions) -> list[int]:
        return torch.arange(rollout.num_positions)[positions].reshape(-1).tolist()

    def _step_means(self, rollout: Rollout, j: int, model_cond):
        """Policy step at position j of `rollout`: (log_prob [n], mean, std), differentiable in the LoRA."""
        st: FlowState = rollout.state
        x, s, s2 = st.latents[:, j], st.sigmas[:, j], st.sigmas_next[:, j]
        v = self._velocity(x, s, model_cond, lambda j=j: f"trained position {j} (denoising steps "
                                                     f"{sorted(set(st.steps[:, j].tolist()))})")
        ns = self.cfg.noise_subspace
        steps = st.steps[:, j]
        if ns.kind == "full" or not isinstance(ns.factor, (list, tuple)) or bool((steps == steps[0]).all()):
            _, lp, mean, std = self.step_fn(x, v, s, s2, self.cfg.noise_level, prev=st.next_latents[:, j],
                                            subspace=ns.for_step(int(steps[0])))
            return lp, mean, std
        # per-step factors and samples at different steps (a window per group): one step call per step index
        lp = torch.empty(len(steps), device=x.device)
        mean = std = None
        for k in steps.unique().tolist():
            sel = (steps == k).nonzero().squeeze(1).to(x.device)
            _, lp_k, mean_k, std_k = self.step_fn(x[sel], v[sel], s[sel], s2[sel], self.cfg.noise_level,
                                                  prev=st.next_latents[sel, j], subspace=ns.for_step(k))
            if mean is None:
                mean = torch.zeros_like(x, dtype=mean_k.dtype)
                std = torch.zeros(len(steps), *std_k.shape[1:], device=x.device, dtype=std_k.dtype)
            lp = lp.index_put((sel,), lp_k)
            mean = mean.index_put((sel,), mean_k)
            std = std.index_put((sel,), std_k)
        return lp, mean, std

    def _kl_at(self, rollout: Rollout, j: int, mean: Tensor, ref_mean: Tensor, std: Tensor) -> Tensor:
        """`[n]` Gaussian mean KL at position j, measured in the subspace each sample's step explored."""
        ns, steps = self.cfg.noise_subspace, rollout.state.steps[:, j]
        if ns.kind == "full" or not isinstance(ns.factor, (list, tuple)) or bool((steps == steps[0]).all()):
            return sde_mod.subspace_mean_kl(mean, ref_mean, std, ns.for_step(int(steps[0])))
        out = torch.empty(len(steps), device=mean.device)
        for k in steps.unique().tolist():
            sel = (steps == k).nonzero().squeeze(1).to(mean.device)
            out = out.index_put((sel,), sde_mod.subspace_mean_kl(mean[sel], ref_mean[sel], std[sel], ns.for_step(k)))
        return out

    def log_prob(self, rollout: Rollout, positions, generator: torch.Generator | None = None) -> StepOutput:
        """Recompute log-probs `[n, len(positions)]` of the recorded steps with the current weights.

        Only the requested positions run the transformer. The step means and stds travel in the output's
        `aux`, so `reference_kl` on the same output skips the policy forward.
        """
        idx = self._position_indices(rollout, positions)
        model_cond = self._model_cond(rollout.state.cond)
        out, means, stds = [], [], []
        for j in idx:
            lp, mean, std = self._step_means(rollout, j, model_cond)
            out.append(lp)
            means.append(mean)
            stds.append(std)
        lp = torch.stack(out, 1) if out else torch.zeros(len(rollout), 0, device=self.device)
        return StepOutput(lp, aux={"idx": idx, "means": means, "stds": stds})

    @contextlib.contextmanager
    def reference(self):
        """The frozen reference model: the transformer with its LoRA disabled."""
        self.transformer.disable_adapters()
        try:
            yield
        finally:
            self.transformer.enable_adapters()

    def reference_kl(self, rollout: Rollout, positions, out: StepOutput | None = None, estimator=None,
                     generator: torch.Generator | None = None) -> Tensor:
        """Gaussian mean KL to the reference `[n, len]`: mean over dims of `(mu - mu_ref)^2 / (2 std^2)`.

        Flow-GRPO's KL: both steps share `std`, so the KL of two Gaussians reduces to the mean distance;
        `std` is what the SDE step returns (Flow-GRPO: the diffusion coefficient; see `sde.py`). With a noise
        subspace the distance is measured there (`sde.subspace_mean_kl`): only those directions are explored.
        The policy's means come from `out.aux` (the `log_prob` output of the same positions) when given;
        `estimator` is unused (the closed form replaces the k1/k2/k3 estimators).
        """
        if self.cfg.sde == "ode":
            raise ValueError("reference_kl needs a stochastic step; sde='ode' has std = 0")
        idx = self._position_indices(rollout, positions)
        aux = out.aux if out is not None else None
        reuse = aux is not None and aux.get("idx") == idx
        model_cond = self._model_cond(rollout.state.cond)
        kls = []
        for n_j, j in enumerate(idx):
            if reuse:
                mean, std = aux["means"][n_j], aux["stds"][n_j]
            else:
                _, mean, std = self._step_means(rollout, j, model_cond)
            with torch.no_grad(), self.reference():
                _, ref_mean, _ = self._step_means(rollout, j, model_cond)
            kls.append(self._kl_at(rollout, j, mean, ref_mean, std))             # [n], in the explored subspace
        return torch.stack(kls, 1) if kls else torch.zeros(len(rollout), 0, device=self.device)

    # ------------------------------------------------------------------ forward-process objectives
    def conditional_velocity(self, x: Tensor, sigma: Tensor, cond) -> Tensor:
        """The CFG-free velocity `[n, *latent]` (fp32) of the current weights at per-sample sigmas `[n]`."""
        net = self.forward_module if torch.is_grad_enabled() else self.transformer   # prepared module (DDP hooks)
        v = self.spec.predict_velocity(net, x.to(self.model_dtype), sigma.to(x.device), cond).float()
        if not torch.isfinite(v).all():
            raise FloatingPointError("the transformer returned a non-finite velocity in the forward-process loss")
        return v

    def _old_params(self) -> list[Tensor]:
        if getattr(self, "_old_lora", None) is None:
            self._old_lora = [p.detach().clone() for p in self.trainable_parameters()]
        return self._old_lora

    @contextlib.contextmanager
    def old_policy(self):
        """The EMA old policy (DiffusionNFT's v_old): its LoRA weights swapped in, no autograd."""
        params = self.trainable_parameters()
        saved = [p.detach().clone() for p in params]
        try:
            with torch.no_grad():
                for p, o in zip(params, self._old_params()):
                    p.copy_(o)
            yield
        finally:
            with torch.no_grad():
                for p, s in zip(params, saved):
                    p.copy_(s)

    def update_old_policy(self, decay: float) -> None:
        """`old <- decay * old + (1 - decay) * current` (call after each optimizer step; `matching.ema_decay`)."""
        from . import matching as matching_mod

        matching_mod.ema_update(self._old_params(), self.trainable_parameters(), decay)

    def _forward_draws(self, rollout: Rollout, generator: torch.Generator | None, step: int | None):
        """`times_per_sample` draws of `(eps [n, *latent], t [n])`; with `shared_noise` one per group, from a
        generator seeded by (group seed, step, draw), so a group shares them across micro-batches too."""
        from . import matching as matching_mod

        fp, st = self.cfg.forward_process, rollout.state
        n, shape = len(rollout), st.final_latents.shape[1:]
        out = []
        for d in range(fp.times_per_sample):
            if fp.shared_noise:
                eps, t = torch.empty(n, *shape), torch.empty(n)
                for gs in st.group_seeds.unique().tolist():
                    g = torch.Generator().manual_seed((int(gs) * 1_000_003 + (step or 0) * 7_919 + d) % (2**63))
                    sel = (st.group_seeds == gs).nonzero().squeeze(1).cpu()
                    eps[sel] = torch.randn(1, *shape, generator=g).expand(len(sel), *shape)
                    t[sel] = matching_mod.sample_times(1, g, fp.high_noise_bias, fp.t_min, fp.t_max).expand(len(sel))
            else:
                eps = torch.randn(n, *shape, generator=generator)
                t = matching_mod.sample_times(n, generator, fp.high_noise_bias, fp.t_min, fp.t_max)
            out.append((eps.to(self.device), t.to(self.device)))
        return out

    def forward_process(self, rollout: Rollout, generator: torch.Generator | None = None, needs=("v",),
                        step: int | None = None) -> dict[str, Tensor]:
        """The tensors a forward-process objective consumes, on the rollout's clean latents `x0`.

        For each of `times_per_sample` fresh `(eps, t)` (`_forward_draws`): `x_t = (1 - t) x0 + t eps` and the
        CFG-free velocities the objective `needs`: "v" (current weights, with gradient), "v_old" (the EMA old
        policy, DiffusionNFT), "v_ref" (the base, LoRA off; adds "kl_ref [n]" = mean over draws of
        `matching.velocity_kl`). Returns `v / v_old / v_ref / eps [n, K, *latent]`, `t [n, K]`, `x0 [n, *latent]`.
        `step` (the trainer's step) moves the EMA old policy once per new step: decay `min(ema_rate * step, ema_cap)`.
        """
        from . import matching as matching_mod

        unknown = sorted(set(needs) - {"v", "v_old", "v_ref"})
        if unknown:
            raise ValueError(f"forward_process: unknown inputs {unknown}; FlowPolicy provides v, v_old, v_ref")
        fp, st = self.cfg.forward_process, rollout.state
        if "v_old" in needs and step is not None and step != getattr(self, "_old_step", None):
            if getattr(self, "_old_lora", None) is not None:
                self.update_old_policy(matching_mod.ema_decay(step, fp.ema_rate, fp.ema_cap))
            self._old_step = step
        x0 = st.final_latents.float()                                               # [n, *latent]
        draws = self._forward_draws(rollout, generator, step)
        xs = [matching_mod.noised(x0, eps, t) for eps, t in draws]
        out: dict[str, Tensor] = {"x0": x0, "eps": torch.stack([e for e, _ in draws], 1),
                                  "t": torch.stack([t for _, t in draws], 1)}
        # old and reference velocities first: swapping weights in place after a current forward would invalidate
        # the tensors autograd saved for its backward
        if "v_old" in needs:
            with torch.no_grad(), self.old_policy():
                out["v_old"] = torch.stack([self.conditional_velocity(x, t, st.cond) for x, (_, t) in zip(xs, draws)], 1)
        if "v_ref" in needs:
            with torch.no_grad(), self.reference():
                out["v_ref"] = torch.stack([self.conditional_velocity(x, t, st.cond) for x, (_, t) in zip(xs, draws)], 1)
        out["v"] = torch.stack([self.conditional_velocity(x, t, st.cond) for x, (_, t) in zip(xs, draws)], 1)
        if "v_ref" in needs:
            out["kl_ref"] = matching_mod.velocity_kl(out["v"], out["v_ref"])        # [n], mean over draws and dims
        return out

    # ------------------------------------------------------------------ checkpoints
    def state_dict_trainable(self) -> dict[str, Tensor]:
        """The LoRA weights (peft names, no adapter name); shards stay shards (the trainer gathers them)."""
        from peft.utils import get_peft_model_state_dict

        return {k: v.detach() for k, v in get_peft_model_state_dict(self.transformer).items()}

    def load_state_dict_trainable(self, sd: dict[str, Tensor]) -> None:
        from peft.utils import set_peft_model_state_dict

        result = set_peft_model_state_dict(self.transformer, sd, adapter_name="default")
        if getattr(result, "unexpected_keys", None):
            raise KeyError(f"unexpected LoRA keys: {result.unexpected_keys[:4]}")

    def save_pretrained(self, directory: str, state: dict[str, Tensor] | None = None) -> None:
        """Write the LoRA so that `<Pipeline>.load_lora_weights(directory)` loads it (alpha kept in metadata).

        `state`: full LoRA weights by peft name (the trainer passes them gathered when the model is sharded)."""
        from peft.utils import get_peft_model_state_dict

        os.makedirs(directory, exist_ok=True)
        sd = state if state is not None else get_peft_model_state_dict(self.transformer)
        sd = {k: v.detach().cpu().contiguous() for k, v in sd.items()}
        self.spec.save_lora(directory, sd, self.transformer.peft_config["default"].to_dict())


def _local_or_hub(pretrained: str) -> str:
    """`pkg://package/folder` (a model shipped inside an installed package) -> its path; else unchanged."""
    if pretrained.startswith("pkg://"):
        from mmgrpo.groups import resolve_data_path

        path = resolve_data_path(pretrained)
        if not path.exists():
            raise FileNotFoundError(f"FlowPolicy.Config.pretrained {pretrained!r} resolves to {path}, which does not exist")
        return str(path)
    return pretrained
