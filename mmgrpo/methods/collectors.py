"""The seed papers' sampling and data methods as collectors, registered into `mmgrpo.collect` by name.

A collector gathers one step's (rollout, raw rewards [n, K]). Every decision here is made from gathered
(all-rank) rewards and from seeds derived from (run seed, step), so it is identical on every rank, equal
per-rank sample counts are kept, and a resumed run repeats it exactly. Collectors that keep a subset of what
they drew use the core's `Pool` (`mmgrpo.collect`), which sends a sample another rank drew over the wire.

Reward transforms (`posterior_gate`, `reward_switch`, `length_budget`) run an `inner` collector
(`{name: ..., **params}`, default `single`) and then rewrite its raw reward columns, so they compose with
any sampling strategy, e.g. `sampling: {name: reward_switch, correct: 0, penalties: [1], inner: {name: dynamic}}`.
The inner collector's own decisions (dynamic sampling's zero-variance test) see the untransformed rewards.
"""

from __future__ import annotations

import heapq
import math
from typing import Callable

import torch
from torch import Tensor

from .. import schedules
from ..advantages import group_index, group_mean_std
from ..collect import COLLECTORS, CollectContext, Pool, take_batch
from ..groups import derive_seed
from ..rollout import Rollout, SampleBatch
from .tracker import ValueTracker, prompt_key

register = COLLECTORS.register

# salts that keep the seeds of each collector's extra draws apart from the group sampler's
_SALT_DYNAMIC, _SALT_ALLOC, _SALT_LOPE, _SALT_PRIORITY = 0xD5, 0xA1, 0x10BE, 0x5B0


# ------------------------------------------------------------------------------------------------ helpers

def _sample_score(ctx: CollectContext, batch: SampleBatch) -> tuple[Rollout | None, Tensor | None]:
    """Sample and score `batch` (this rank's part, kept here). Every rank calls this together: rewards may
    gather. A rank with nothing to draw skips it on one process; on several it takes part with an empty batch."""
    if len(batch) == 0 and ctx.world_size == 1:
        return None, None
    rollout = ctx.sample(batch)
    return rollout, ctx.score(rollout)


def _gathered_total(ctx: CollectContext, raw: Tensor) -> Tensor:
    """Combined reward [N_global] of every rank's samples (NaN counted as the lowest reward)."""
    total = ctx.gather(ctx.combine(raw))
    return torch.nan_to_num(total, nan=-math.inf) if total.numel() else total


def _combined(ctx: CollectContext, raw: Tensor) -> Tensor:
    """Combined reward of gathered raw rewards (NaN -> 0 for variance tests)."""
    return torch.nan_to_num(ctx.combine(raw), nan=0.0)


def _members(group_ids: Tensor) -> list[Tensor]:
    """Positions of each group's members, groups in order of first appearance."""
    gidx, k = group_index(group_ids)
    return [(gidx == q).nonzero().squeeze(1) for q in range(k)]


def _renumbered(groups: list[list[int]]) -> Tensor:
    """Group ids 0..len(groups)-1, one per member of the chosen groups."""
    return torch.cat([torch.full((len(m),), q, dtype=torch.long) for q, m in enumerate(groups)]) if groups \
        else torch.zeros(0, dtype=torch.long)


def _run_inner(ctx: CollectContext, inner: dict | None, where: str) -> tuple[Rollout, Tensor]:
    """Run the nested collector `inner` ({name, **params}; None = single), resolving its schedules."""
    spec = dict(inner or {"name": "single"})
    if "name" not in spec:
        raise ValueError(f"{where}.inner: give the collector's name (one of: {', '.join(COLLECTORS.names())})")
    fn = COLLECTORS.get(spec.pop("name"))
    if isinstance(fn, type):
        raise ValueError(f"{where}.inner: {fn.__name__} keeps state across steps and must be the outer collector")
    if ctx.total_steps is None and any(schedules.is_schedule(v) and "steps" not in v for v in spec.values()):
        raise ValueError(f"{where}.inner: a schedule without `steps` needs the run length, which this trainer does "
                         "not pass to collectors; give the schedule an explicit `steps`")
    params = schedules.resolve(spec, ctx.step, ctx.total_steps or 1, f"{where}.inner")
    return fn(ctx, **params)


# ----------------------------------------------------------------------------------- dynamic sampling (DAPO)

def fresh_groups(ctx: CollectContext, round_: int) -> SampleBatch:
    """A new global batch of the step's number of groups for refill round `round_` >= 1 (seeded prompts)."""
    s = ctx.sampler
    g = torch.Generator().manual_seed(derive_seed(s.seed, ctx.step, _SALT_DYNAMIC, round_))
    n_prompts = len(s.prompts)
    k = s.groups_per_step
    idx = torch.randperm(n_prompts, generator=g).tolist() if k <= n_prompts else \
        torch.randint(n_prompts, (k,), generator=g).tolist()
    idx = idx[:k]
    conds = [s.prompts[i] for i in idx for _ in range(s.group_size)]
    gids = torch.arange(k).repeat_interleave(s.group_size) + round_ * k
    seeds = torch.tensor([derive_seed(s.seed, ctx.step, _SALT_DYNAMIC, round_, j) for j in range(len(conds))])
    gseeds = torch.tensor([derive_seed(s.seed, ctx.step, _SALT_DYNAMIC, round_, 1 << 20, int(x)) for x in gids])
    return SampleBatch(conds, gids, seeds, gseeds, ctx.step)


@register("dynamic", "DAPO dynamic sampling: replace groups whose rewards are all equal with freshly drawn "
          "groups (up to max_rounds draws)", ref="DAPO dynamic sampling")
def dynamic(ctx: CollectContext, max_rounds: int = 4, tol: float = 1e-8) -> tuple[Rollout, Tensor]:
    """Draw the step's groups; keep those with reward variance; draw fresh groups (new seeded prompts) until
    the step holds as many informative groups as it should or `max_rounds` draws were made; fill any gap
    with the first zero-variance groups (which the trainer then masks). Group ids are renumbered 0..K-1.

    Use when: many groups are all-correct or all-wrong (easy or hard prompts) and batches lose their signal.
    """
    s = ctx.sampler
    k = s.groups_per_step
    pool = Pool(ctx, "sampling 'dynamic'")
    informative: list[list[int]] = []              # chosen groups as global pool positions
    flat: list[list[int]] = []
    for r in range(max_rounds):
        batch = s.global_batch(ctx.step) if r == 0 else fresh_groups(ctx, r)
        offset = pool.size
        total = _combined(ctx, pool.draw(batch))
        _, std, _ = group_mean_std(total, batch.group_ids)
        for members in _members(batch.group_ids):
            (informative if float(std[members[0]]) > tol else flat).append((members + offset).tolist())
        if len(informative) >= k:
            break
    chosen = (informative + flat)[:k]
    return pool.take([j for m in chosen for j in m], _renumbered(chosen))


# --------------------------------------------------------------------------- D^3S sample level (S48)

def max_variance_subset(values: Tensor, m: int) -> Tensor:
    """Indices of the m-subset of `values` [n] with the largest (population) variance, in ascending index order.

    The optimum is always the k smallest plus the m-k largest for some k (moving any chosen inner value
    outward never lowers the variance), so m+1 candidates are checked; ties go to the smaller k.
    """
    n = values.shape[0]
    if m >= n:
        return torch.arange(n)
    order = torch.sort(values.double(), stable=True).indices
    best, best_var = None, -1.0
    for k in range(m + 1):
        pick = torch.cat([order[:k], order[n - (m - k):]]) if m - k else order[:k]
        var = float(values.double()[pick].var(unbiased=False))
        if var > best_var + 1e-12:
            best, best_var = pick, var
    return torch.sort(best).values


@register("d3s", "D^3S sample level: keep the members of each group that maximize its reward (advantage) variance",
          ref="S48 D^3S")
def d3s(ctx: CollectContext, keep_ratio: float = 0.5, min_keep: int = 2) -> tuple[Rollout, Tensor]:
    """Draw the step's groups, then keep m = max(min_keep, round(keep_ratio G)) members per group: the subset
    with the largest variance of the combined reward, which maximizes the variance of its advantages and the
    bound on the policy-gradient norm. Schedule keep_ratio upwards to relax the down-sampling over training,
    e.g. `keep_ratio: {schedule: linear, start: 0.25, end: 1.0}`; pair with `advantage.name: d3s_tokens`.

    Use when: rollouts are cheap relative to updates, or most samples of a group say the same thing.
    """
    s = ctx.sampler
    g = s.group_size
    m = min(g, max(min_keep, round(keep_ratio * g)))
    pool = Pool(ctx, "sampling 'd3s'")
    batch = s.global_batch(ctx.step)
    total = _combined(ctx, pool.draw(batch))
    chosen = [members[max_variance_subset(total[members], m)].tolist() for members in _members(batch.group_ids)]
    return pool.take([j for c in chosen for j in c], _renumbered(chosen))


# ------------------------------------------------------------------------- XRPO rollout allocation (S38)

def allocate(counts: list[int], variances: list[float], budget: int, prior_var: float, prior_weight: float
             ) -> list[int]:
    """Greedy allocation of `budget` extra samples: each goes to the group whose estimate of the mean reward
    gains most, d_g = v_g / (n_g (n_g + 1)) with v_g a variance shrunk towards `prior_var`. Ties: lower index."""
    extra = [0] * len(counts)
    shrunk = [(n * v + prior_weight * prior_var) / (n + prior_weight) for n, v in zip(counts, variances)]
    heap = [(-sv / (n * (n + 1)), q) for q, (n, sv) in enumerate(zip(counts, shrunk))]
    heapq.heapify(heap)
    for _ in range(budget):
        _, q = heapq.heappop(heap)
        extra[q] += 1
        n = counts[q] + extra[q]
        heapq.heappush(heap, (-shrunk[q] / (n * (n + 1)), q))
    return extra


@register("uncertainty_alloc", "XRPO allocation: a first half of each group, then the remaining rollouts to the "
          "prompts whose success rate is most uncertain", ref="S38 XRPO")
def uncertainty_alloc(ctx: CollectContext, base_frac: float = 0.5, prior_var: float = 0.25,
                      prior_weight: float = 1.0) -> tuple[Rollout, Tensor]:
    """Phase 1 draws b = max(2, round(base_frac G)) members of every group; phase 2 spends the other K (G - b)
    rollouts one at a time on the group whose mean-reward estimate would shrink most (`allocate`), so
    uncertain prompts (success rate near 1/2) get more samples and settled ones fewer. The step's sample
    count is unchanged; group sizes vary (the core's group statistics handle that).

    Use when: prompts differ widely in difficulty and a fixed G wastes rollouts on settled ones.
    """
    s = ctx.sampler
    k, g = s.groups_per_step, s.group_size
    b = min(g, max(2, round(base_frac * g)))
    full = s.global_batch(ctx.step)
    gidx, _ = group_index(full.group_ids)
    first = torch.cat([(gidx == q).nonzero().squeeze(1)[:b] for q in range(k)])
    phase1 = take_batch(full, first)
    pool = Pool(ctx, "sampling 'uncertainty_alloc'")
    total = _combined(ctx, pool.draw(phase1))
    pidx, _ = group_index(phase1.group_ids)
    variances = [float(total[pidx == q].var(unbiased=False)) for q in range(k)]
    extra = allocate([b] * k, variances, k * (g - b), prior_var, prior_weight)
    conds, gids, seeds, gseeds = [], [], [], []
    for q in range(k):
        j0 = int((pidx == q).nonzero()[0])
        for e in range(extra[q]):
            conds.append(phase1.conds[j0])
            gids.append(int(phase1.group_ids[j0]))
            seeds.append(derive_seed(s.seed, ctx.step, _SALT_ALLOC, int(phase1.group_ids[j0]), e))
            gseeds.append(int(phase1.group_seeds[j0]))
    phase2 = SampleBatch(conds, torch.tensor(gids, dtype=torch.long), torch.tensor(seeds, dtype=torch.long),
                         torch.tensor(gseeds, dtype=torch.long), ctx.step)
    pool.draw(phase2)
    return pool.local()           # each rank keeps its own draws of both phases (equal counts per rank)


# -------------------------------------------------------------------------------------------- LoPE (S40)

@register("lope", "resample all-fail groups with perturbed conditions (the policy's perturb_conditions hook)",
          ref="S40 LoPE")
def lope(ctx: CollectContext, fail_threshold: float = 0.0, max_rounds: int = 2,
         inner: dict | None = None) -> tuple[Rollout, Tensor]:
    """After the inner collector, every group whose combined rewards are all <= fail_threshold is drawn again
    with perturbed conditions, `policy.perturb_conditions(conds, seeds)` (LoPE: a random lorem-ipsum prefix
    for text prompts; one perturbation per group), and replaced by the new draw if it has any success; up
    to `max_rounds` perturbations per step. The replaced samples train on the perturbed conditions they
    were drawn under. Adapters implement the hook so that rewards still score the original task.

    Use when: hard prompts fail in every sample, so GRPO gets no signal from them (zero-advantage problem).
    """
    policy = ctx.policy
    if policy is None:
        raise ValueError("sampling 'lope' needs the policy (CollectContext.policy), which this trainer does not "
                         "pass to collectors")
    hook = getattr(policy, "perturb_conditions", None)
    if not callable(hook):
        raise ValueError(f"sampling 'lope': policy {type(policy).__name__} has no perturb_conditions(conds, seeds) "
                         "hook; add one to the adapter or choose another collector")
    rollout, raw = _run_inner(ctx, inner, "sampling")
    n = len(rollout)
    for r in range(max_rounds):
        total = _gathered_total(ctx, raw)                                                   # [N]
        gids = ctx.gather(rollout.group_ids)
        best_before = torch.full((int(gids.max()) + 1 if gids.numel() else 0,), -math.inf)
        best_before = best_before.scatter_reduce(0, gids.long(), total.float(), reduce="amax") if gids.numel() else best_before
        failing = (best_before <= fail_threshold)                                              # [num group ids]
        local_fail = failing[rollout.group_ids.long()] if n else torch.zeros(0, dtype=torch.bool)
        if not bool(ctx.all_sum([float(local_fail.sum())])[0]):
            break
        idx = local_fail.nonzero().squeeze(1)
        pert_seeds = torch.tensor([derive_seed(ctx.sampler.seed, ctx.step, _SALT_LOPE, r, int(gid))
                                   for gid in rollout.group_ids[idx]], dtype=torch.long)
        conds = hook([rollout.conds[i] for i in idx.tolist()], pert_seeds)
        # per-sample seeds from the sample's global position (ranks hold equal counts), never from the rank
        seeds = torch.tensor([derive_seed(ctx.sampler.seed, ctx.step, _SALT_LOPE, r, ctx.rank * n + i)
                              for i in idx.tolist()], dtype=torch.long)
        batch = SampleBatch(list(conds), rollout.group_ids[idx], seeds, pert_seeds, ctx.step)
        new, new_raw = _sample_score(ctx, batch)
        # replace a group only if its perturbed draw succeeded somewhere (decided on all ranks' scores)
        new_total = _gathered_total(ctx, new_raw if new_raw is not None else torch.zeros(0, raw.shape[1]))
        new_gids = ctx.gather(batch.group_ids)
        ok = torch.zeros_like(failing)
        if new_gids.numel():
            best = torch.full_like(best_before, -math.inf).scatter_reduce(0, new_gids.long(), new_total.float(),
                                                                        reduce="amax")
            ok = failing & (best > fail_threshold)
        if new is None or not len(new):
            continue
        take = ok[batch.group_ids.long()]                                                  # [len(idx)]
        if not take.any():
            continue
        order = list(range(n))
        for pos, i in enumerate(idx.tolist()):
            if take[pos]:
                order[i] = n + pos
        rollout = Rollout.concat([rollout, new]).select(torch.tensor(order))
        raw = torch.cat([raw, new_raw])[torch.tensor(order)]
    return rollout, raw


lope.policy_hooks = ("perturb_conditions",)   # adapter methods this collector calls (checked at config time)


# ------------------------------------------------------------------------------- reward transforms

def _transform(ctx: CollectContext, inner: dict | None, fn: Callable[[Rollout, Tensor], Tensor]
               ) -> tuple[Rollout, Tensor]:
    rollout, raw = _run_inner(ctx, inner, "sampling")
    return rollout, fn(rollout, raw)


def _check_columns(raw: Tensor, cols: list[int], where: str) -> None:
    for c in cols:
        if not -raw.shape[1] <= c < raw.shape[1]:
            raise ValueError(f"sampling '{where}': reward column {c} does not exist; the run has {raw.shape[1]} "
                             f"rewards (columns 0..{raw.shape[1] - 1} in the order of `rewards:`)")


def gate_process(raw: Tensor, outcome: int, process: list[int], threshold: float) -> Tensor:
    """Posterior-GRPO gate on raw scores [n, K]: process columns kept where raw[:, outcome] >= threshold, else 0."""
    out = raw.clone()
    passed = torch.nan_to_num(raw[:, outcome], nan=-math.inf) >= threshold                    # [n]
    for c in process:
        out[:, c] = torch.where(passed, raw[:, c], torch.zeros_like(raw[:, c]))
    return out


def switch_penalties(raw: Tensor, ratio: Tensor, penalties: list[int], min_ratio: float) -> Tensor:
    """GRPO-lambda switch: penalty columns zeroed where the group's correctness `ratio` [n] < min_ratio."""
    out = raw.clone()
    for c in penalties:
        out[:, c] = torch.where(ratio >= min_ratio, raw[:, c], torch.zeros_like(raw[:, c]))
    return out


def budget_penalty(raw: Tensor, length: Tensor, budget: float, column: int, weight: float, hard: bool) -> Tensor:
    """Length budget on column `column`: minus weight * max(0, L - B) / B, or 0 where L > B if `hard`."""
    out = raw.clone()
    length = length.to(raw.dtype)
    if hard:
        out[:, column] = torch.where(length > budget, torch.zeros_like(length), raw[:, column])
    else:
        out[:, column] = raw[:, column] - weight * (length - budget).clamp(min=0) / budget
    return out


@register("posterior_gate", "outcome-gated process rewards: process reward columns count only for samples whose "
          "outcome is correct", ref="S45 Posterior-GRPO")
def posterior_gate(ctx: CollectContext, outcome: int = 0, process: list | None = None, threshold: float = 1.0,
                   inner: dict | None = None) -> tuple[Rollout, Tensor]:
    """P-GRPO: raw[:, p] = raw[:, p] if raw[:, outcome] >= threshold else 0, for every process column p
    (default: all columns but `outcome`). A reasoning-quality reward then cannot be farmed by failed answers.

    Use when: a process / reasoning-quality reward is available and would otherwise be reward-hacked.
    """
    def fn(rollout: Rollout, raw: Tensor) -> Tensor:
        cols = list(process) if process is not None else [c for c in range(raw.shape[1]) if c != outcome]
        _check_columns(raw, [outcome, *cols], "posterior_gate")
        return gate_process(raw, outcome, cols, threshold)

    return _transform(ctx, inner, fn)


@register("reward_switch", "GRPO-lambda: length/penalty reward columns count only in groups whose correctness "
          "ratio reaches min_ratio", ref="S19 GRPO-lambda")
def reward_switch(ctx: CollectContext, correct: int = 0, penalties: list | None = None, min_ratio: float = 0.5,
                  correct_threshold: float = 1.0, inner: dict | None = None) -> tuple[Rollout, Tensor]:
    """GRPO-lambda: a group's correctness ratio is the fraction of members with raw[:, correct] >=
    correct_threshold (over all ranks); below `min_ratio` its penalty columns (length penalties; default all
    but `correct`) are zeroed, so the group trains on plain correctness; at or above it they count.

    Use when: a length penalty makes accuracy collapse early in training; penalize length only where the
    model already solves the prompt.
    """
    def fn(rollout: Rollout, raw: Tensor) -> Tensor:
        cols = list(penalties) if penalties is not None else [c for c in range(raw.shape[1]) if c != correct]
        _check_columns(raw, [correct, *cols], "reward_switch")
        ok = (torch.nan_to_num(raw[:, correct], nan=-math.inf) >= correct_threshold).double()
        ratio_all, _, _ = group_mean_std(ctx.gather(ok), ctx.gather(rollout.group_ids))        # [N]
        lo = ctx.rank * len(rollout)                                     # ranks hold equal sample counts
        return switch_penalties(raw, ratio_all[lo: lo + len(rollout)], cols, min_ratio)

    return _transform(ctx, inner, fn)


@register("length_budget", "curriculum length budget (schedulable): penalize the reward of samples longer than "
          "the budget", ref="S44 Train Long, Think Short")
def length_budget(ctx: CollectContext, budget: float, column: int = 0, weight: float = 1.0, hard: bool = False,
                  inner: dict | None = None) -> tuple[Rollout, Tensor]:
    """Length L = number of valid positions; raw[:, column] -= weight * max(0, L - B) / B, or with `hard` the
    column is set to 0 where L > B (the answer counts as truncated). Shrink B over training with a schedule,
    e.g. `budget: {schedule: linear, start: 1024, end: 256}`: explore first, then compress.

    Use when: reasoning length should come down without losing the accuracy found with long budgets.
    """
    if budget <= 0:
        raise ValueError(f"sampling 'length_budget': budget must be > 0, got {budget}")

    def fn(rollout: Rollout, raw: Tensor) -> Tensor:
        _check_columns(raw, [column], "length_budget")
        return budget_penalty(raw, rollout.mask.sum(1), budget, column, weight, hard)

    return _transform(ctx, inner, fn)


# ------------------------------------------------------------------ SPO prioritized prompt sampling (S35)

@register("prioritized", "SPO curriculum: draw the step's prompts with probability ~ sqrt(tracked reward variance) "
          "+ floor (a persistent per-prompt tracker)", ref="S35 SPO prioritized sampling")
class Prioritized:
    """Prompts are drawn without replacement with weights w(x) = sqrt(Var(x)) + floor, Var from a per-prompt
    `ValueTracker` (KL-adaptive forgetting) fed with every step's combined rewards; unseen prompts use the
    prior's Bernoulli variance. Groups of G are then drawn as usual. The tracker is saved in checkpoints
    and restored on resume, so the prompt sequence of a resumed run is that of an uninterrupted one.

    Use when: the prompt set mixes solved, hopeless and learnable prompts; with `advantage.name: spo`.
    """

    def __init__(self, floor: float = 0.05, rho_min: float = 0.875, rho_max: float = 0.96, d_half: float = 0.06,
                 prior: float = 0.5, prior_weight: float = 1.0):
        if floor <= 0:
            raise ValueError(f"sampling 'prioritized': floor must be > 0 (every prompt keeps a chance), got {floor}")
        self.floor = floor
        self.tracker = ValueTracker(rho_min, rho_max, d_half, prior, prior_weight)

    def weights(self, prompts: list) -> Tensor:
        return torch.tensor([math.sqrt(self.tracker.variance(prompt_key(p))) + self.floor for p in prompts],
                            dtype=torch.float64)

    def __call__(self, ctx: CollectContext) -> tuple[Rollout, Tensor]:
        s = ctx.sampler
        k, g = s.groups_per_step, s.group_size
        gen = torch.Generator().manual_seed(derive_seed(s.seed, ctx.step, _SALT_PRIORITY))
        w = self.weights(s.prompts)
        idx = torch.multinomial(w, k, replacement=k > len(s.prompts), generator=gen).tolist()
        conds = [s.prompts[i] for i in idx for _ in range(g)]
        gids = torch.arange(k).repeat_interleave(g)
        seeds = torch.tensor([derive_seed(s.seed, ctx.step, j) for j in range(len(conds))])
        gseeds = torch.tensor([derive_seed(s.seed, ctx.step, 1 << 20, int(x)) for x in gids])
        batch = SampleBatch(conds, gids, seeds, gseeds, ctx.step)
        pool = Pool(ctx, "sampling 'prioritized'")
        total = _combined(ctx, pool.draw(batch))                                                 # [N]
        rollout, raw = pool.local()
        m = rollout.mask.to(torch.float64)
        ll = ctx.gather((rollout.log_probs.double() * m).sum(1) / m.sum(1).clamp(min=1))        # [N]
        rows: dict[str, list[int]] = {}
        for j, c in enumerate(conds):
            rows.setdefault(prompt_key(c), []).append(j)
        for key, js in rows.items():
            self.tracker.update(key, total[js].tolist(), float(ll[js].mean()))
        return rollout, raw

    def state_dict(self) -> dict:
        return self.tracker.state_dict()

    def load_state_dict(self, sd: dict) -> None:
        self.tracker.load_state_dict(sd)
