"""`TextPolicy`: GRPO sampling and token log-probs for any transformers causal LM (`AutoModelForCausalLM`).

One position on the time axis is one generated token. `sample` decodes with a KV cache over left-padded
prompts and records each token's log-prob under the processed distribution (temperature, top-k, top-p:
`processing.py`), which `log_prob` recomputes with the same processing, so the first ratio is 1.
Positions after the first EOS or stop string are masked out. Reference: LoRA off (peft) or a frozen copy.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mmgrpo.policy import PolicyBase, StepOutput
from mmgrpo.rollout import Rollout, SampleBatch

from .logprobs import naive_log_probs, shared_prefix_log_probs
from .processing import process_logits, token_log_probs


class TextPolicy(PolicyBase):
    """A causal-LM policy; pass `model` and `tokenizer` (a transformers tokenizer with a pad token)."""

    provides = ("token_ids", "entropy", "seq_log_likelihood")

    @dataclass
    class Config:
        max_new_tokens: int = 8  # completion tokens (positions on the time axis)
        temperature: float = 1.0  # sampling temperature; the log-prob uses the same one
        top_k: int = 0  # keep the k most probable tokens (0 = off), in sampling and in the log-prob
        top_p: float = 1.0  # nucleus mass kept (1 = off), in sampling and in the log-prob
        stop_strings: tuple = ()  # decoded completions are cut after the first of these
        chat_template: bool = False  # wrap prompts in the tokenizer's chat template (needs one)
        share_prefix: bool = False  # encode each group's prompt once in the training log-prob (Prefix Grouper)
        lora_rank: int = 8  # LoRA rank (peft); 0 = full fine-tuning with a frozen reference copy
        lora_alpha: float = 16.0  # LoRA scale numerator

        def __post_init__(self) -> None:
            if not self.temperature > 0:
                raise ValueError(f"policy.temperature must be > 0, got {self.temperature}")
            if not 0 < self.top_p <= 1:
                raise ValueError(f"policy.top_p must lie in (0, 1], got {self.top_p}")
            if self.top_k < 0 or self.max_new_tokens < 1 or self.lora_rank < 0:
                raise ValueError("policy.top_k and policy.lora_rank must be >= 0, policy.max_new_tokens >= 1")

    def __init__(self, cfg: "TextPolicy.Config | None" = None, device=None, *, model: nn.Module, tokenizer):
        self.cfg = cfg = cfg or TextPolicy.Config()
        if tokenizer.pad_token_id is None:
            raise ValueError("TextPolicy: the tokenizer needs a pad token (prompts are left-padded)")
        if cfg.chat_template and not getattr(tokenizer, "chat_template", None):
            raise ValueError("policy.chat_template is true but the tokenizer has no chat template")
        self.tok = tokenizer
        self.proc = dict(temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p)
        self.model = model.to(device or "cpu")
        self._ref_model = None
        if cfg.lora_rank > 0:
            from peft import LoraConfig, get_peft_model

            self.model = get_peft_model(self.model, LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha,
                                                               target_modules="all-linear"))
        else:
            self._ref_model = copy.deepcopy(self.model).requires_grad_(False)
        self._use_reference = False

    def trainable_module(self) -> nn.Module:
        return self.model

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def reference(self):
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

    def _module(self) -> nn.Module:
        if self._use_reference and self._ref_model is not None:
            return self._ref_model
        return self.forward_module if torch.is_grad_enabled() else self.model

    def encode_prompts(self, conds: list) -> tuple[Tensor, Tensor]:
        """Prompts -> ([n, P] ids left-padded, [n, P] attention mask)."""
        texts = [str(c) for c in conds]
        if self.cfg.chat_template:
            texts = [self.tok.apply_chat_template([{"role": "user", "content": t}], tokenize=False,
                                                  add_generation_prompt=True) for t in texts]
        self.tok.padding_side = "left"
        enc = self.tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        return enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)

    @torch.no_grad()
    def sample(self, batch: SampleBatch, evaluate: bool = False) -> Rollout:
        from transformers import DynamicCache

        prompt, attn = self.encode_prompts(batch.conds)
        n, steps = prompt.shape[0], self.cfg.max_new_tokens
        gens = [torch.Generator().manual_seed(int(s)) for s in batch.seeds.tolist()]
        cache, ids, mask = DynamicCache(), prompt, attn.long()
        pos = (mask.cumsum(1) - 1).clamp(min=0)
        toks, logps, ents = [], [], []
        for _ in range(steps):
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache,
                                use_cache=True).logits[:, -1].float()              # [n, V]
            probs = process_logits(logits, **self.proc).softmax(-1).cpu()
            tok = torch.stack([torch.multinomial(probs[i], 1, generator=gens[i])[0] for i in range(n)])
            tok = tok.to(self.device)
            lp, en = token_log_probs(logits, tok, **self.proc)
            toks.append(tok), logps.append(lp), ents.append(en)
            ids, pos = tok[:, None], pos[:, -1:] + 1
            mask = torch.cat([mask, torch.ones(n, 1, dtype=mask.dtype, device=mask.device)], 1)
        comp = torch.stack(toks, 1)                                                 # [n, L]
        keep, texts = self._stop_mask(comp)
        logp = torch.stack(logps, 1).cpu()
        return Rollout(group_ids=batch.group_ids, log_probs=logp, mask=keep, outputs=texts,
                       conds=list(batch.conds), entropy=torch.stack(ents, 1).cpu(), token_ids=comp.cpu(),
                       seq_log_likelihood=(logp * keep).sum(1),
                       state={"prompt": prompt.cpu(), "prompt_attn": attn.cpu(), "completion": comp.cpu()})

    def _stop_mask(self, comp: Tensor) -> tuple[Tensor, list[str]]:
        """[n, L] trainable mask (up to and including EOS or the token completing a stop string) and texts."""
        n, length = comp.shape
        keep = torch.zeros(n, length, dtype=torch.bool)
        texts = []
        for i, row in enumerate(comp.tolist()):
            end = length
            for j in range(length):
                text = self.tok.decode(row[:j + 1], skip_special_tokens=True)
                if row[j] == self.tok.eos_token_id or any(s in text for s in self.cfg.stop_strings):
                    end = j + 1
                    break
            keep[i, :end] = True
            text = self.tok.decode(row[:end], skip_special_tokens=True)
            for s in self.cfg.stop_strings:
                text = text.split(s)[0]
            texts.append(text)
        return keep, texts

    def log_prob(self, rollout: Rollout, positions: slice, generator=None) -> StepOutput:
        st, dev = rollout.state, self.device
        args = (self._module(), st["prompt"].to(dev), st["prompt_attn"].to(dev), st["completion"].to(dev))
        if self.cfg.share_prefix:
            logp, _ = shared_prefix_log_probs(*args, rollout.group_ids.to(dev), **self.proc)
        else:
            logp, _ = naive_log_probs(*args, **self.proc)
        return StepOutput(logp[:, positions].float())

    def save_pretrained(self, directory, state=None) -> None:
        if state is not None:
            self.load_state_dict_trainable(state)
        self.model.save_pretrained(str(directory))
