"""`MDLMPolicy`: GRPO sampling and likelihoods for masked-diffusion language models (LLaDA / Dream layout).

One position on the time axis is one completion token. `sample` decodes by block-wise low-confidence
remasking (`sampling.py`) and records each token's decoding step; `log_prob` dispatches to the configured
likelihood estimator (`estimators.py`). Monte Carlo estimators do not give the sampler's value, so the
trainer recomputes old log-probs with the current weights (`recompute_old_log_probs`), and the trainer's
generator salts every sample's own mask generator: old, reference and current see the same masks.
The reference is the base model with the LoRA adapter switched off (peft), or a frozen copy when the whole
model is fine-tuned (`lora_rank: 0`).
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from mmgrpo.policy import PolicyBase, StepOutput
from mmgrpo.rollout import Rollout, SampleBatch

from . import estimators as est_mod
from . import masks as masks_mod
from .models import LORA_TARGETS, ModelSpec, TinyBertConfig, build_tiny_bert, token_logits
from .sampling import REMASKING, Schedule, generate
from .vocab import MASK, PAD, CharVocab


class MDLMPolicy(PolicyBase):
    """A masked-diffusion LM policy over a character vocabulary (the toy worlds' tiny `BertForMaskedLM`)."""

    recompute_old_log_probs = True
    provides = ("token_ids", "seq_log_likelihood")

    @dataclass
    class Config:
        alphabet: str = "0123456789+="  # characters of the vocabulary (ids 0, 1 are PAD and MASK)
        gen_length: int = 4  # completion tokens (positions on the time axis)
        block_length: int = 4  # tokens per decoding block (1 = left to right, JustGRPO)
        steps: int = 4  # decoding steps over all blocks (a multiple of the number of blocks)
        temperature: float = 1.0  # sampling temperature; the estimators score with the same one
        remasking: str = "low_confidence"  # low_confidence (commit the most probable) | random
        estimator: str = "d1"  # likelihood estimator: d1 | coupled | elbo | trace | ar | spg (mdlm.estimators)
        estimator_params: dict = field(default_factory=dict)  # its parameters (e.g. {prompt_mask_p: 0.3})
        shifted_logits: bool = False  # True: Dream layout (logits[i-1] predict token i); False: LLaDA layout
        lora_rank: int = 8  # LoRA rank (peft) on attention and MLP projections; 0 = full fine-tuning
        lora_alpha: float = 16.0  # LoRA scale numerator
        model: TinyBertConfig = field(default_factory=TinyBertConfig)  # the tiny denoiser's architecture
        weights: str | None = None  # safetensors file of the denoiser (local or pkg://...); null = random init
        time_chunk: int | None = None  # positions per backward pass (None = all; estimators see all anyway)

        def __post_init__(self) -> None:
            Schedule(self.gen_length, self.block_length, self.steps)
            if not self.temperature > 0:
                raise ValueError(f"policy.temperature must be > 0, got {self.temperature}")
            if self.remasking not in REMASKING:
                raise ValueError(f"policy.remasking must be one of {REMASKING}, got {self.remasking!r}")
            if self.lora_rank < 0:
                raise ValueError(f"policy.lora_rank must be >= 0 (0 = full fine-tuning), got {self.lora_rank}")
            est_mod.get(self.estimator).bind(self.estimator_params)      # unknown names fail at config time

    def __init__(self, cfg: "MDLMPolicy.Config | None" = None, device: torch.device | str | None = None,
                 *, model: nn.Module | None = None):
        self.cfg = cfg = cfg or MDLMPolicy.Config()
        self.vocab = CharVocab(cfg.alphabet)
        self.spec = ModelSpec(mask_token_id=MASK, pad_token_id=PAD, shifted_logits=cfg.shifted_logits)
        self.spec.check(len(self.vocab))
        self.schedule = Schedule(cfg.gen_length, cfg.block_length, cfg.steps)
        self.estimator = est_mod.get(cfg.estimator)
        self._estimate = self.estimator.bind(cfg.estimator_params)
        self.time_chunk = cfg.time_chunk
        if model is None:
            model = build_tiny_bert(cfg.model, len(self.vocab), PAD)
            if cfg.weights is not None:
                _load_weights(model, cfg.weights)
        self.model = model.to(device or "cpu")
        self._ref_model: nn.Module | None = None
        self._use_reference = False
        if cfg.lora_rank > 0:
            from peft import LoraConfig, get_peft_model

            targets = list(LORA_TARGETS.get(type(self.model).__name__, ("query", "value")))
            # Gaussian A, zero B: the adapter starts as the identity, the reference KL is 0 at init
            self.model = get_peft_model(self.model, LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha,
                                                               target_modules=targets, init_lora_weights="gaussian"))
        else:
            self._ref_model = copy.deepcopy(self.model).requires_grad_(False)

    # ---------------------------------------------------------------- plumbing
    def trainable_module(self) -> nn.Module:
        return self.model

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def reference(self):
        """Log-probs inside this context come from the base model (LoRA off) or the frozen initial copy."""

        @contextlib.contextmanager
        def ctx():
            self._use_reference = True
            off = self.model.disable_adapter() if self._ref_model is None else contextlib.nullcontext()
            try:
                with off:
                    yield
            finally:
                self._use_reference = False

        return ctx()

    def _forward(self, ids: Tensor, attn: Tensor) -> Tensor:
        """Aligned logits [B, S, V]; PAD and MASK are never predicted."""
        if self._use_reference and self._ref_model is not None:
            module = self._ref_model
        else:
            module = self.forward_module if torch.is_grad_enabled() else self.model
        logits = token_logits(module, ids, attn.long(), self.spec)
        logits[..., [PAD, MASK]] = -torch.inf
        return logits

    def _prompts(self, conds: list) -> tuple[Tensor, Tensor]:
        ids, attn = self.vocab.encode([str(c) for c in conds])
        if ids.shape[1] == 0 and self.spec.shifted_logits:
            raise ValueError("shifted_logits needs a non-empty prompt (token i is predicted at position i - 1)")
        return ids.to(self.device), attn.to(self.device)

    # ---------------------------------------------------------------- sampling and likelihoods
    @torch.no_grad()
    def sample(self, batch: SampleBatch, evaluate: bool = False) -> Rollout:
        cfg = self.cfg
        prompt, attn = self._prompts(batch.conds)
        gens = [torch.Generator().manual_seed(int(s)) for s in batch.seeds.tolist()]
        comp, logps, order = generate(self._forward, prompt, attn, self.schedule, MASK, gens, cfg.temperature,
                                      cfg.remasking)
        n, length = comp.shape
        state = {"prompt": prompt.cpu(), "prompt_attn": attn.cpu(), "completion": comp.cpu(),
                 "order": order.cpu(), "seeds": batch.seeds.clone().long().cpu()}
        return Rollout(group_ids=batch.group_ids, log_probs=logps.float().cpu(),
                       mask=torch.ones(n, length, dtype=torch.bool), outputs=self.vocab.decode(comp.cpu()),
                       conds=list(batch.conds), state=state, token_ids=comp.cpu(),
                       seq_log_likelihood=logps.float().sum(1).cpu())

    def with_advantages(self, rollout: Rollout, advantages: Tensor) -> Rollout:
        """Estimators needing "advantage_sign" (SPG) read `rollout.state["advantage_sign"]`, recorded here."""
        if "advantage_sign" in self.estimator.needs:
            a = advantages if advantages.dim() == 1 else advantages.sum(1)
            rollout.state["advantage_sign"] = torch.sign(a).detach().cpu()
        return rollout

    def context(self, rollout: Rollout, generator: torch.Generator | None = None) -> est_mod.ScoreContext:
        """The estimators' view of `rollout`; per-sample mask generators salted by `generator`'s seed."""
        st, dev = rollout.state, self.device
        gens = (masks_mod.sample_generators(st["seeds"], masks_mod.salt_of(generator))
                if "generator" in self.estimator.needs else [])
        return est_mod.ScoreContext(forward=self._forward, prompt=st["prompt"].to(dev),
                                    prompt_attn=st["prompt_attn"].to(dev), completion=st["completion"].to(dev),
                                    order=st["order"].to(dev), mask_id=MASK, temperature=self.cfg.temperature,
                                    gens=gens, adv_sign=st.get("advantage_sign"))

    def log_prob(self, rollout: Rollout, positions: slice, generator: torch.Generator | None = None) -> StepOutput:
        """The estimator's per-token values at `positions` (the full completion is scored: masks are drawn
        for the whole sequence, so every chunk of one sample sees the same masks)."""
        values = self._estimate(self.context(rollout, generator))                   # [n, L]
        return StepOutput(values[:, positions].float())

    def save_pretrained(self, directory, state: dict[str, Tensor] | None = None) -> None:
        """LoRA: the peft adapter (`PeftModel.from_pretrained`-loadable); full fine-tune: the whole model."""
        if state is not None:
            self.load_state_dict_trainable(state)
        self.model.save_pretrained(str(directory))


def _load_weights(model: nn.Module, path: str) -> None:
    """Load a safetensors state dict (e.g. `pretrain.py`'s output) into the denoiser, strictly."""
    from safetensors.torch import load_model

    from mmgrpo.groups import resolve_data_path

    file = resolve_data_path(path)
    if not file.is_file():
        raise FileNotFoundError(f"policy.weights {path!r}: no such file (write one with "
                                "python -m mmgrpo.modalities.mdlm.pretrain --out FILE)")
    try:
        load_model(model, str(file), strict=True)             # tied embeddings / LM head stored once
    except RuntimeError as exc:
        raise ValueError(f"policy.weights {path!r} does not fit policy.model / alphabet: {str(exc)[:300]}") from exc
