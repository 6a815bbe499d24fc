"""Shared-prefix against naive token log-probs of a group of completions over one long prompt: time and agreement.

A group of `--group` completions (`--completion-len` tokens each) shares one prompt of `--prompt-len` tokens,
as a long video or audio prompt does in a video / audio LLM (issue #15). For both
`mmgrpo.modalities.text.logprobs.naive_log_probs` (one forward over [prompt; completion] per member) and
`shared_prefix_log_probs` (the prompt encoded once into a KV cache with gradient, the completions run against
it) it times one log-prob forward plus the backward of a policy-gradient-like loss sum_i w_i sum_t logp_it
(fixed random weights w), on a random `LlamaForCausalLM` built here from a config (`--layers`, `--hidden`;
nothing is downloaded), in float32 on the CPU. Naive and shared alternate inside every repeat (one warm-up
each first), so a noisy shared machine slows both alike; the times are medians over `--repeats`. It reports
`ratio` = naive time / shared time, and the max absolute differences of the log-probs, the entropies and the
gradients (every parameter) between the two, next to the largest gradient entry for scale.

Measured (2026-12-03; 1 thread, shared 2-core machine, float32, group 8, 4 layers, hidden 256, vocabulary 4096,
5.0M parameters; medians of 5 repeats, 3 at prompt 2048):
  prompt 1024, completions 48   naive 5.18 s   shared 0.85 s   ratio 6.1   max |grad diff| 1.5e-5 (largest grad 15.4)
  prompt 1536, completions 48   naive 9.44 s   shared 1.10 s   ratio 8.6   max |grad diff| 6.2e-6 (largest grad 9.6)
  prompt 2048, completions 64   naive 14.78 s  shared 1.69 s   ratio 8.8   max |grad diff| 1.0e-5 (largest grad 18.7)
  max |logp diff| 9.5e-7 and max |entropy diff| <= 4.8e-6 in all three (float32 rounding: relative gradient
  differences are 1e-6 or below).
Before the prompt forward asked for its last position's logits only (`logits_to_keep=1`), it also ran the LM
head over every prompt position (and the backward through it): shared 1.42 s, ratio 6.6 at prompt 1536. The
rest of the shared time is the prompt's own forward / backward (attention over P^2 once) and the members'
completions against the repeated cache. The naive cost grows with group x (P + L) tokens and group x (P + L)^2
attention against P + group x L tokens and P^2 + group x L x P, so the ratio grows towards the group size as the
prompt grows (here a little beyond it: naive also runs the LM head over every prompt position of every member).

    OMP_NUM_THREADS=1 python benchmarks/prefix_sharing.py [--prompt-len 1536] [--completion-len 48] [--group 8]
        [--repeats 5] [--layers 4] [--hidden 256] [--vocab 4096]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from mmgrpo.modalities.text.logprobs import naive_log_probs, shared_prefix_log_probs


def build_model(layers: int, hidden: int, vocab: int, max_len: int, seed: int = 0):
    """A random float32 LlamaForCausalLM (grouped-query attention, head dim 64 or less)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    heads = max(1, hidden // 64)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden * 11 // 4,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
                      max_position_embeddings=max_len, pad_token_id=0, eos_token_id=1)
    return LlamaForCausalLM(cfg).float()


def step(model, fn, weights: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """One log-prob forward + backward of sum_i w_i sum_t logp_it: (seconds, logp, entropy, gradients)."""
    model.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    logp, ent = fn()
    (weights[:, None] * logp).sum().backward()
    sec = time.perf_counter() - t0
    return sec, logp.detach(), ent.detach(), [p.grad for p in model.parameters()]


def run(prompt_len: int, completion_len: int, group: int, repeats: int, layers: int, hidden: int,
        vocab: int, temperature: float = 1.0, seed: int = 0) -> dict:
    model = build_model(layers, hidden, vocab, prompt_len + completion_len, seed)
    g = torch.Generator().manual_seed(seed + 1)
    prompt = torch.randint(2, vocab, (1, prompt_len), generator=g).expand(group, -1)      # [G, P] shared
    attn = torch.ones_like(prompt)
    comp = torch.randint(2, vocab, (group, completion_len), generator=g)                 # [G, L]
    gid = torch.zeros(group, dtype=torch.long)
    weights = torch.randn(group, generator=g)                                            # advantage-like
    fns = {"naive": lambda: naive_log_probs(model, prompt, attn, comp, temperature=temperature),
           "shared": lambda: shared_prefix_log_probs(model, prompt, attn, comp, gid, temperature=temperature)}
    res = {name: step(model, fn, weights) for name, fn in fns.items()}                   # warm-up, and the results
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(step(model, fn, weights)[0])
    (_, lp_n, en_n, gr_n), (_, lp_s, en_s, gr_s) = res["naive"], res["shared"]
    med = {name: statistics.median(t) for name, t in times.items()}
    return {
        "prompt_len": prompt_len, "completion_len": completion_len, "group": group, "repeats": repeats,
        "layers": layers, "hidden": hidden, "vocab": vocab, "params": sum(p.numel() for p in model.parameters()),
        "threads": torch.get_num_threads(),
        "naive_s": round(med["naive"], 4), "shared_s": round(med["shared"], 4),
        "naive_all_s": [round(t, 4) for t in times["naive"]], "shared_all_s": [round(t, 4) for t in times["shared"]],
        "ratio": round(med["naive"] / med["shared"], 2),
        "max_abs_logp_diff": (lp_n - lp_s).abs().max().item(),
        "max_abs_entropy_diff": (en_n - en_s).abs().max().item(),
        "max_abs_grad_diff": max((a - b).abs().max().item() for a, b in zip(gr_n, gr_s)),
        "max_abs_grad": max(a.abs().max().item() for a in gr_n),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompt-len", type=int, default=1536)
    ap.add_argument("--completion-len", type=int, default=48)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the figures above: 1)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    out = run(a.prompt_len, a.completion_len, a.group, a.repeats, a.layers, a.hidden, a.vocab, a.temperature, a.seed)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
