"""Likelihood estimators of the mdlm adapter side by side, at equal forward-pass budgets.

For every registered estimator (`mmgrpo.modalities.mdlm.estimators.ESTIMATORS`) one estimate averages
k = budget // views independent calls, where `views` is the number of masked views (forward rows) one call
scores per sample, so every estimator spends `budget` views per sample:

* exactness, on an enumerable model (alphabet "ab", 4 completion tokens: 16 sequences, 2^4 masked views
  each, 24 decoding orders; a random sharp BertForMaskedLM built here, as in tests/mdlm/tiny.py): for each
  sequence the exact random-order log-likelihood log E_order[p_order(y)] (the masked-diffusion model's
  likelihood, which every ELBO bounds from below), the ELBO E_order[log p_order(y)] and the left-to-right
  log p_ar(y); per estimator the bias of the sequence estimate against the exact value (mean over the 16
  sequences) and its variance over `reps` independent draws (mean over the sequences). `trace` replays a
  uniformly random decoding order per draw (a rollout's order), so it estimates the ELBO; `ar` is exact for
  the left-to-right likelihood, which is another model's likelihood (block length 1).
* gradient agreement, on the arithmetic world (configs/mdlm/arith.yaml, shipped base weights): the
  policy-gradient direction grad mean_i(A_i * sum_t est_it) of two independent batches (64 samples: 8 prompts
  x 8, GRPO advantages of the verifier reward), cosine averaged over `pairs` pairs. Higher means a batch of 64
  already points somewhere reproducible.
* `spg` (if registered) needs each sample's advantage sign: it is benchmarked with the signs of the batch
  (gradient: `spg`) and once per bound (both sections: `spg_lower`, `spg_upper`, `spg_upper_beta1`); it spends
  the budget as one call over budget // L random orders.

    OMP_NUM_THREADS=1 python benchmarks/mdlm_estimators.py [--budget 12] [--reps 64] [--pairs 16]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import time
from pathlib import Path

import torch

from mmgrpo.config import load_config
from mmgrpo.modalities.mdlm import estimators as E
from mmgrpo.modalities.mdlm.models import TinyBertConfig
from mmgrpo.modalities.mdlm.policy import MDLMPolicy
from mmgrpo.modalities.mdlm.vocab import MASK
from mmgrpo.rollout import Rollout, SampleBatch
from mmgrpo.trainer import Trainer

ARITH = Path(__file__).resolve().parents[1] / "configs" / "mdlm" / "arith.yaml"
PROMPT = "ab"


def variants() -> dict[str, tuple[str, dict, torch.Tensor | None]]:
    """name -> (registered estimator, params, forced advantage sign or None)."""
    out = {name: (name, {}, None) for name in E.ESTIMATORS if name != "spg"}
    out["d1_p0"] = ("d1", {"prompt_mask_p": 0.0}, None)            # the arithmetic recipe's setting
    if "spg" in E.ESTIMATORS:
        out["spg_lower"] = ("spg", {}, 1.0)
        out["spg_upper"] = ("spg", {}, -1.0)
        out["spg_upper_beta1"] = ("spg", {"beta": 1.0}, -1.0)
    return out


def use(policy: MDLMPolicy, name: str, params: dict, budget: int) -> None:
    """Select the estimator; SPG spends the budget on one call of budget // L orders (its K pools in the log)."""
    if name == "spg":
        params = {**params, "orders": max(1, budget // policy.cfg.gen_length)}
    policy.estimator = E.get(name)
    policy._estimate = policy.estimator.bind(params)


class Counter:
    """Wraps policy._forward to count forward rows (masked views)."""

    def __init__(self, policy):
        self.policy, self.inner, self.rows = policy, policy._forward, 0
        policy._forward = self

    def __call__(self, ids, attn):
        self.rows += ids.shape[0]
        return self.inner(ids, attn)


def estimate(policy, rollout, salt: int, k: int, sign=None) -> torch.Tensor:
    """[n] sequence estimate: mean of k calls with salts salt * 1000 + j."""
    if sign is not None:
        rollout.state["advantage_sign"] = torch.full((len(rollout),), float(sign)) if not torch.is_tensor(sign) else sign
    vals = [policy.log_prob(rollout, slice(0, rollout.num_positions),
                            torch.Generator().manual_seed(salt * 1000 + j)).log_probs.sum(1) for j in range(k)]
    return torch.stack(vals).mean(0)


def views_per_call(policy, rollout, sign) -> int:
    c = Counter(policy)
    try:
        with torch.no_grad():
            estimate(policy, rollout, 0, 1, sign)
    finally:
        policy._forward = c.inner
    return c.rows // len(rollout)


# ------------------------------------------------------------------ the enumerable model
def tiny_rollout(policy, ys: torch.Tensor, orders: torch.Tensor, seeds: torch.Tensor) -> Rollout:
    n, length = ys.shape
    ids, attn = policy.vocab.encode([PROMPT] * n)
    state = {"prompt": ids, "prompt_attn": attn, "completion": ys, "order": orders, "seeds": seeds}
    return Rollout(group_ids=torch.arange(n), log_probs=torch.zeros(n, length),
                   mask=torch.ones(n, length, dtype=torch.bool), outputs=policy.vocab.decode(ys),
                   conds=[PROMPT] * n, state=state)


@torch.no_grad()
def exact_values(policy, y: torch.Tensor) -> dict[str, float]:
    length = len(y)
    subsets = [frozenset(s) for k in range(length + 1) for s in itertools.combinations(range(length), k)]
    ids, attn = policy.vocab.encode([PROMPT])
    comp = y.expand(len(subsets), -1).clone()
    for row, s in enumerate(subsets):
        comp[row, list(s)] = MASK
    full = torch.cat([ids.expand(len(subsets), -1), comp], 1)
    att = torch.cat([attn.expand(len(subsets), -1), torch.ones_like(comp, dtype=torch.bool)], 1)
    logp = torch.log_softmax(policy._forward(full, att)[:, ids.shape[1]:] / policy.cfg.temperature, -1)
    table = dict(zip(subsets, logp.gather(-1, y.expand(len(subsets), -1)[..., None]).squeeze(-1).double()))

    def order_ll(order):
        total, masked = 0.0, set(range(length))
        for i in order:
            total += float(table[frozenset(masked)][i])
            masked.remove(i)
        return total

    per = torch.tensor([order_ll(o) for o in itertools.permutations(range(length))], dtype=torch.double)
    return {"exact": float(torch.logsumexp(per, 0) - math.log(len(per))), "elbo": float(per.mean()),
            "left_to_right": order_ll(range(length))}


def exactness(budget: int, reps: int) -> dict:
    torch.manual_seed(0)
    policy = MDLMPolicy(MDLMPolicy.Config(alphabet="ab", gen_length=4, block_length=4, steps=4, lora_rank=0,
                                          model=TinyBertConfig(hidden=16, layers=2, heads=2, intermediate=32,
                                                               max_positions=16, init_std=0.5)))
    policy.model.eval()
    ys = torch.tensor(list(itertools.product([2, 3], repeat=4)))                    # [16, 4]
    ref = [exact_values(policy, y) for y in ys]
    exact = torch.tensor([r["exact"] for r in ref], dtype=torch.double)
    g = torch.Generator().manual_seed(1)
    n = len(ys) * reps
    rep_ys = ys.repeat_interleave(reps, 0)
    orders = torch.stack([torch.randperm(4, generator=g) for _ in range(n)])      # order[i] = step of token i
    r = tiny_rollout(policy, rep_ys, orders, torch.arange(n))
    out = {"model": "alphabet ab, 4 tokens, 16 sequences", "reps": reps, "budget_views": budget,
           "mean_exact": float(exact.mean()), "elbo_gap_mean": float((exact - torch.tensor(
               [x["elbo"] for x in ref], dtype=torch.double)).mean()), "estimators": {}}
    for label, (name, params, sign) in variants().items():
        use(policy, name, params, budget)
        v = views_per_call(policy, r, sign)
        k = max(1, budget // v)
        with torch.no_grad():
            est = estimate(policy, r, 7, k, sign).double().reshape(len(ys), reps)
        out["estimators"][label] = {"views_per_call": v, "calls": k, "views": v * k,
                                    "bias": float((est.mean(1) - exact).mean()),
                                    "abs_bias": float((est.mean(1) - exact).abs().mean()),
                                    "variance": float(est.var(1).mean()),
                                    "rmse": float(((est - exact[:, None]) ** 2).mean().sqrt())}
    return out


# ------------------------------------------------------------------ the arithmetic world
def gradient_cosine(budget: int, pairs: int, prompts_per_batch: int = 8) -> dict:
    cfg = load_config(ARITH, ["run_dir=/tmp/mdlm_estimators_bench", "progress=false", "tensorboard=false"])
    t = Trainer(cfg)
    policy, g = t.policy, cfg.data.group_size
    bs = prompts_per_batch * g
    rng = torch.Generator().manual_seed(0)
    batches = []
    for b in range(2 * pairs):
        idx = torch.randperm(len(t.prompts), generator=rng)[:prompts_per_batch]
        conds = [t.prompts[i] for i in idx.tolist() for _ in range(g)]
        sb = SampleBatch(conds=conds, group_ids=torch.arange(prompts_per_batch).repeat_interleave(g),
                         seeds=torch.arange(bs) + 10_000 * (b + 1), group_seeds=torch.arange(bs))
        with torch.no_grad():
            ro = policy.sample(sb)
        rew = t.score(ro)[:, 0].reshape(prompts_per_batch, g)
        adv = ((rew - rew.mean(1, keepdim=True)) / (rew.std(1, keepdim=True) + 1e-4)).reshape(-1)
        batches.append((ro, adv))
    params = [p for p in policy.model.parameters() if p.requires_grad]
    out = {"world": "configs/mdlm/arith.yaml base", "batch": bs, "pairs": pairs, "budget_views": budget,
           "estimators": {}}
    signed = {"spg": ("spg", {}, None)} if "spg" in E.ESTIMATORS else {}     # the real SPG: the batch's signs
    for label, (name, est_params, forced) in {**variants(), **signed}.items():
        use(policy, name, est_params, budget)
        grads = []
        for b, (ro, adv) in enumerate(batches):
            sign = torch.sign(adv) if forced is None else forced
            k = max(1, budget // views_per_call(policy, ro, sign))
            policy.model.zero_grad()
            (adv * estimate(policy, ro, 100 + b, k, sign)).mean().backward()
            grads.append(torch.cat([p.grad.reshape(-1) for p in params]).clone())
        cos = [float(torch.nn.functional.cosine_similarity(grads[2 * i], grads[2 * i + 1], 0)) for i in range(pairs)]
        c = torch.tensor(cos)
        out["estimators"][label] = {"calls": k, "views": k * views_per_call(policy, ro, sign),
                                    "cosine_mean": float(c.mean()),
                                    "cosine_se": float(c.std() / math.sqrt(len(c))) if len(c) > 1 else None,
                                    "grad_norm_mean": float(torch.stack(grads).norm(dim=1).mean())}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=int, default=12, help="masked views per sample per estimate")
    ap.add_argument("--reps", type=int, default=64, help="independent draws per sequence (exactness)")
    ap.add_argument("--pairs", type=int, default=16, help="pairs of independent batches (gradient cosine)")
    a = ap.parse_args()
    t0 = time.time()
    result = {"exactness": exactness(a.budget, a.reps), "gradient": gradient_cosine(a.budget, a.pairs)}
    result["seconds"] = round(time.time() - t0, 1)
    result["threads"] = torch.get_num_threads()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
