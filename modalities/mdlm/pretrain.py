"""Pretraining of the arithmetic world's denoiser with the masked-diffusion loss (LLaDA's SFT objective).

For a (prompt, answer) pair, t ~ U(0, 1), each answer token is masked with probability t (at least one), and
the loss is sum_{masked} CE(y_i) / t / L: the negative ELBO of the answer given the prompt. Prompts are never
masked. `python -m mmgrpo.modalities.mdlm.pretrain --out weights.safetensors` writes the model weights.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from .arith import answer, problems
from .models import TinyBertConfig, build_tiny_bert
from .vocab import MASK, PAD, CharVocab


def split_problems(digits: int, held_out: int, seed: int) -> tuple[list[str], list[str]]:
    """(training, held-out) problems: every `digits`-digit addition, `held_out` of them kept aside."""
    every = problems(digits, (10 ** digits) ** 2, seed)
    return every[held_out:], every[:held_out]


def masked_diffusion_loss(model, vocab: CharVocab, prompts: list[str], width: int, g: torch.Generator) -> torch.Tensor:
    """The negative ELBO (per answer token) of the answers of `prompts`, one random mask ratio per sample."""
    ids, attn = vocab.encode(prompts)
    ans = torch.tensor([[vocab.index[c] for c in answer(p, width)] for p in prompts])        # [n, L]
    n, length = ans.shape
    t = torch.rand(n, 1, generator=g).clamp(min=1e-3)                                         # [n, 1]
    m = torch.rand(n, length, generator=g) < t
    m[torch.arange(n), torch.randint(length, (n,), generator=g)] = True                       # >= 1 masked
    inp = torch.cat([ids, torch.where(m, MASK, ans)], 1)
    att = torch.cat([attn, torch.ones_like(m)], 1).long()
    logits = model(input_ids=inp, attention_mask=att).logits[:, -length:].float()
    logits[..., [PAD, MASK]] = -torch.inf
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ans.reshape(-1),
                                           reduction="none").reshape(n, length)
    return ((ce * m) / t).sum(1).mean() / length


def pretrain(model_cfg: TinyBertConfig, alphabet: str, digits: int, width: int, steps: int, batch: int, lr: float,
             seed: int, held_out: int = 500, log=print, every: int = 0, callback=None):
    """Train a fresh denoiser; `callback(step, model)` every `every` steps (held-out checks)."""
    vocab = CharVocab(alphabet)
    model = build_tiny_bert(model_cfg, len(vocab), PAD).train()
    train, _ = split_problems(digits, held_out, seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed)
    t0 = time.time()
    for step in range(steps):
        idx = torch.randint(len(train), (batch,), generator=g).tolist()
        loss = masked_diffusion_loss(model, vocab, [train[i] for i in idx], width, g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 200 == 0 or step == steps - 1:
            log(json.dumps({"step": step, "loss": round(float(loss), 4), "time": round(time.time() - t0, 1)}))
        if callback is not None and every and (step + 1) % every == 0:
            callback(step + 1, model.eval())
            model.train()
    return model.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--digits", type=int, default=2)
    ap.add_argument("--steps", type=int, default=1800)   # the shipped weights: 1,800 steps
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    a = ap.parse_args()
    from safetensors.torch import save_model

    cfg = TinyBertConfig(hidden=a.hidden, layers=a.layers, heads=2, intermediate=2 * a.hidden, max_positions=16)
    model = pretrain(cfg, "0123456789+=", a.digits, a.digits + 1, a.steps, a.batch, a.lr, a.seed)
    save_model(model, a.out)                                   # tied embeddings / LM head stored once


if __name__ == "__main__":
    main()
