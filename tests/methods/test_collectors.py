"""Collectors of the catalog on the real toy policy and rewards: what they keep, and one rank equals two."""

import itertools

import pytest
import torch

import mmgrpo.methods  # noqa: F401  (registers the catalog)
from mmgrpo import collect
from mmgrpo.methods import collectors as C

from .toyworld import World, length_reward, make_ctx, match_reward, scorer, toy_policy

close = torch.testing.assert_close
SMALL = dict(vocab=2, length=2, num_conds=2)          # strict success ~1/4 at init: many all-fail groups
SMALL_PROMPTS = ["0", "1"]


def run(name, policy, rewards, world_size=1, step=0, **params):
    """Call collector `name` on one rank, or on `world_size` simulated ranks (results concatenated)."""
    fn = collect.get(name)

    def one(rank, world):
        ctx = make_ctx(policy, rewards, step=step, prompts=SMALL_PROMPTS, rank=rank, world=world)
        obj = fn(**params) if isinstance(fn, type) else None
        return obj(ctx) if obj is not None else fn(ctx, **params)

    if world_size == 1:
        return one(0, None)
    parts = World(world_size).run(one)
    assert len({len(roll) for roll, _ in parts}) == 1, "ranks must hold equal sample counts"
    return parts


def canonical(roll, raw):
    """Put samples in a rank-independent order (group, then recorded log-probs) to compare sample sets."""
    keys = sorted(range(len(roll)), key=lambda i: (int(roll.group_ids[i]), roll.log_probs[i].tolist(),
                                                   roll.token_ids[i].tolist()))
    idx = torch.tensor(keys)
    return roll.select(idx), raw[idx]


def same_as_one_rank(name, policy, rewards, ordered=True, **params):
    """Two simulated ranks draw exactly the samples one rank draws (in the same order unless `ordered=False`,
    where each rank lists its own phases first: the group statistics do not depend on the order)."""
    result = one_roll, one_raw = run(name, policy, rewards, **params)
    parts = run(name, policy, rewards, world_size=2, **params)
    two_roll = parts[0][0].concat([p[0] for p in parts])
    two_raw = torch.cat([p[1] for p in parts])
    if not ordered:
        one_roll, one_raw = canonical(one_roll, one_raw)
        two_roll, two_raw = canonical(two_roll, two_raw)
    close(two_raw, one_raw)
    assert torch.equal(two_roll.token_ids, one_roll.token_ids)
    assert torch.equal(two_roll.group_ids, one_roll.group_ids)
    assert two_roll.conds == one_roll.conds
    close(two_roll.log_probs, one_roll.log_probs)
    return result


def group_std(raw, gids):
    from mmgrpo.advantages import group_mean_std
    return group_mean_std(raw.sum(1), gids)[1]


def rescored(rollout, rewards):
    return scorer(rewards)(rollout)


# ------------------------------------------------------------------------------------------- pure helpers

def test_max_variance_subset_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    for n, m in [(6, 2), (7, 3), (8, 5), (5, 5)]:
        v = torch.rand(n, generator=g).round(decimals=1)
        pick = C.max_variance_subset(v, m)
        best = max(float(v[list(s)].double().var(unbiased=False)) for s in itertools.combinations(range(n), m))
        assert float(v[pick].double().var(unbiased=False)) == pytest.approx(best)
        assert len(pick) == m and torch.equal(pick, pick.sort().values)


def test_allocate_hand_computed():
    # counts [2, 2], variances [0, .25], prior .25 with weight 1: shrunk [.25/3, .75/3] = [.0833, .25]
    # gains v / (n (n + 1)): [.0139, .0417] -> group 1; then n = 3: .25 / 12 = .0208 > .0139 -> group 1 again
    assert C.allocate([2, 2], [0.0, 0.25], 2, 0.25, 1.0) == [0, 2]
    # a third extra: .25 / 20 = .0125 < .0139 -> group 0
    assert C.allocate([2, 2], [0.0, 0.25], 3, 0.25, 1.0) == [1, 2]


def test_reward_transforms_hand_computed():
    raw = torch.tensor([[1.0, 0.7], [0.0, 0.9], [float("nan"), 0.5]])
    # posterior gate: the process column counts only where the outcome is >= 1 (NaN outcome: gate closed)
    close(C.gate_process(raw, 0, [1], 1.0)[:, 1], torch.tensor([0.7, 0.0, 0.0]))
    # GRPO-lambda: groups whose correctness ratio is below .5 lose the penalty column
    close(C.switch_penalties(raw, torch.tensor([0.75, 0.25, 0.5]), [1], 0.5)[:, 1], torch.tensor([0.7, 0.0, 0.5]))
    # length budget B = 4: lengths [2, 6, 8] -> over [0, .5, 1] -> minus .5 * over on column 0
    out = C.budget_penalty(raw[:2].repeat(2, 1)[:3], torch.tensor([2, 6, 8]), 4.0, 1, 0.5, hard=False)
    close(out[:, 1], torch.tensor([0.7, 0.9 - 0.25, 0.7 - 0.5]))
    hard = C.budget_penalty(raw, torch.tensor([2, 6, 8]), 4.0, 1, 0.5, hard=True)
    close(hard[:, 1], torch.tensor([0.7, 0.0, 0.0]))


# ---------------------------------------------------------------------------------------- dynamic sampling

def test_dynamic_sampling_refills_zero_variance_groups():
    pol = toy_policy(**SMALL)
    rewards = [match_reward("strict", vocab=2, num_conds=2)]
    base_roll, base_raw = run("single", pol, rewards)
    roll, raw = same_as_one_rank("dynamic", pol, rewards, max_rounds=6)
    assert len(roll) == 16 and roll.group_ids.tolist() == [g for g in range(4) for _ in range(4)]
    informative = (group_std(raw, roll.group_ids) > 0).view(4, 4)[:, 0]
    base_inf = (group_std(base_raw, base_roll.group_ids) > 0).view(4, 4)[:, 0]
    assert informative.sum() > base_inf.sum()                   # the refill found more signal
    assert informative.all()
    close(raw, rescored(roll, rewards))                         # scores belong to the samples kept


# ----------------------------------------------------------------------------------------------- D^3S

def test_d3s_keeps_the_max_variance_members_of_each_group():
    pol = toy_policy(**SMALL)
    rewards = [match_reward("partial", vocab=2, num_conds=2)]
    full_roll, full_raw = run("single", pol, rewards)
    roll, raw = same_as_one_rank("d3s", pol, rewards, keep_ratio=0.5)
    assert len(roll) == 8 and torch.bincount(roll.group_ids).tolist() == [2, 2, 2, 2]
    for q in range(4):
        full = full_raw[full_roll.group_ids == q, 0]
        kept = raw[roll.group_ids == q, 0]
        best = max(float(full[list(s)].var(unbiased=False)) for s in itertools.combinations(range(4), 2))
        assert float(kept.var(unbiased=False)) == pytest.approx(best)
    close(raw, rescored(roll, rewards))


# ------------------------------------------------------------------------------------------ XRPO allocation

def test_uncertainty_alloc_keeps_the_budget_and_moves_rollouts_to_uncertain_prompts():
    pol = toy_policy(**SMALL)
    rewards = [match_reward("strict", vocab=2, num_conds=2)]
    roll, raw = same_as_one_rank("uncertainty_alloc", pol, rewards, ordered=False, base_frac=0.5)
    assert len(roll) == 16
    sizes = torch.bincount(roll.group_ids)
    assert sizes.min() >= 2 and sizes.sum() == 16
    for q in range(4):                                          # every member answers its group's prompt
        assert len({c for c, g in zip(roll.conds, roll.group_ids.tolist()) if g == q}) == 1
    close(raw, rescored(roll, rewards))
    # the first two members of each group decide: an undecided pair (one success) gets at least as many
    # extra rollouts as a pair that agreed
    first = {q: raw[(roll.group_ids == q).nonzero().squeeze(1)[:2], 0] for q in range(4)}
    mixed = [q for q in range(4) if first[q].std() > 0]
    agreed = [q for q in range(4) if first[q].std() == 0]
    if mixed and agreed:
        assert min(sizes[q] for q in mixed) >= max(sizes[q] for q in agreed)


# ----------------------------------------------------------------------------------------------------- LoPE

def test_lope_replaces_all_fail_groups_with_perturbed_draws():
    pol = toy_policy(**SMALL)
    rewards = [match_reward("strict", vocab=2, num_conds=2)]
    base_roll, base_raw = run("single", pol, rewards)
    roll, raw = same_as_one_rank("lope", pol, rewards, max_rounds=4)
    failed_before = base_raw.view(4, 4).max(1).values <= 0
    assert failed_before.any(), "the toy should start with an all-fail group"
    for q in range(4):
        conds = [c for c, g in zip(roll.conds, roll.group_ids.tolist()) if g == q]
        if not failed_before[q]:
            assert conds == [c for c, g in zip(base_roll.conds, base_roll.group_ids.tolist()) if g == q]
        elif "|" in conds[0]:
            assert len(set(conds)) == 1                          # one perturbation per group
            assert raw[roll.group_ids == q].max() > 0            # replaced only by a draw that succeeded
    assert any("|" in c for c in roll.conds)
    close(raw, rescored(roll, rewards))
    close(pol.log_prob(roll, slice(0, 2)).log_probs, roll.log_probs)      # ratio 1 under the perturbed conditions


def test_lope_needs_the_policy_hook():
    pol = toy_policy(**SMALL)
    ctx = make_ctx(pol, [match_reward("strict", vocab=2, num_conds=2)], prompts=SMALL_PROMPTS)
    from dataclasses import replace
    with pytest.raises(ValueError, match="CollectContext.policy"):
        C.lope(replace(ctx, policy=None))
    with pytest.raises(ValueError, match="perturb_conditions"):
        C.lope(replace(ctx, policy=object()))


# --------------------------------------------------------------------------------- reward transform collectors

def test_reward_switch_and_length_budget_on_the_toy():
    pol = toy_policy(stop_token=0)
    rewards = [match_reward("partial"), length_reward()]
    base_roll, base_raw = run("single", pol, rewards)
    roll, raw = run("reward_switch", pol, rewards, correct=0, penalties=[1], min_ratio=0.5,
                    correct_threshold=0.5)
    ok = (base_raw[:, 0] >= 0.5).float().view(4, 4).mean(1).repeat_interleave(4)
    close(raw[:, 1], torch.where(ok >= 0.5, base_raw[:, 1], torch.zeros(16)))
    close(raw[:, 0], base_raw[:, 0])
    roll, raw = run("length_budget", pol, rewards, budget=2.0, column=0, weight=1.0)
    over = (base_roll.mask.sum(1).float() - 2).clamp(min=0) / 2
    close(raw[:, 0], base_raw[:, 0] - over)
    # nested: the switch around a budget around the default sampler
    roll, raw = run("reward_switch", pol, rewards, penalties=[1], correct_threshold=0.5,
                    inner={"name": "length_budget", "budget": 2.0, "inner": {"name": "single"}})
    close(raw[:, 0], base_raw[:, 0] - over)


def test_posterior_gate_on_the_toy():
    pol = toy_policy()
    rewards = [match_reward("strict"), match_reward("partial")]
    _, base_raw = run("single", pol, rewards)
    _, raw = run("posterior_gate", pol, rewards, outcome=0, process=[1], threshold=1.0)
    close(raw[:, 1], torch.where(base_raw[:, 0] >= 1, base_raw[:, 1], torch.zeros(16)))
    with pytest.raises(ValueError, match="reward column 5"):
        run("posterior_gate", pol, rewards, outcome=0, process=[5])


def test_nested_schedule_needs_the_run_length():
    pol = toy_policy()
    ctx = make_ctx(pol, [match_reward()], total_steps=None)
    with pytest.raises(ValueError, match="explicit `steps`"):
        C.length_budget(ctx, budget=2.0, inner={"name": "d3s", "keep_ratio": {"schedule": "linear", "start": 0.5,
                                                                               "end": 1.0}})
    ctx = make_ctx(pol, [match_reward()], total_steps=10, step=10)
    roll, _ = C.length_budget(ctx, budget=2.0, inner={"name": "d3s", "keep_ratio": {"schedule": "linear",
                                                                                    "start": 0.5, "end": 1.0}})
    assert len(roll) == 16                                        # keep_ratio reached 1.0 at the last step


# ---------------------------------------------------------------------------------------- SPO prioritized

def test_prioritized_sampling_prefers_uncertain_prompts_and_resumes_exactly():
    pol = toy_policy()
    rewards = [match_reward("partial")]
    col = C.Prioritized(floor=0.01)
    for key, rs in {"0": [0.0, 1.0], "1": [0.5, 0.5], "2": [1.0, 1.0]}.items():
        col.tracker.update(key, rs, loglik=-1.0)
    w = col.weights(["0", "1", "2"])
    assert w[0] > w[1] and w[0] > w[2]                             # mixed outcomes: the most uncertain
    # state round trip: a restored collector draws the same prompts and ends in the same state
    clone = C.Prioritized(floor=0.01)
    clone.load_state_dict(col.state_dict())
    a, _ = col(make_ctx(pol, rewards, step=3))
    b, _ = clone(make_ctx(pol, rewards, step=3))
    assert a.conds == b.conds and col.state_dict() == clone.state_dict()
    parts = World(2).run(lambda r, w: C.Prioritized(floor=0.01)(make_ctx(pol, rewards, step=3, rank=r, world=w)))
    one, _ = C.Prioritized(floor=0.01)(make_ctx(pol, rewards, step=3))
    assert parts[0][0].conds + parts[1][0].conds == one.conds


# ------------------------------------------------------------------------------ the shared redistribution

def test_pool_take_sends_other_ranks_samples_and_draws_nothing_twice():
    """Pool.take on 2 simulated ranks == on 1 rank, for chosen samples that cross ranks; every sample drawn once."""
    pol = toy_policy(**SMALL)
    rewards = [match_reward("partial", vocab=2, num_conds=2)]
    chosen, new_ids = [7, 0, 13, 2, 9, 4, 15, 10], torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])

    def one(rank, world):
        ctx = make_ctx(pol, rewards, prompts=SMALL_PROMPTS, rank=rank, world=world)
        drawn = []
        sample = ctx.sample
        ctx.sample = lambda b: (drawn.append(len(b)), sample(b))[1]
        pool = collect.Pool(ctx)
        raw = pool.draw(ctx.sampler.global_batch(0))
        roll, kept_raw = pool.take(chosen, new_ids)
        return roll, kept_raw, raw, sum(drawn)

    roll1, raw1, all1, n1 = one(0, None)
    parts = World(2).run(one)
    assert n1 == 16 and [p[3] for p in parts] == [8, 8]          # each rank drew its half, nothing again
    two = roll1.concat([p[0] for p in parts])
    assert torch.equal(two.token_ids, roll1.token_ids) and two.conds == roll1.conds
    close(two.log_probs, roll1.log_probs)
    close(torch.cat([p[1] for p in parts]), raw1)
    close(raw1, all1[torch.tensor(chosen)])
    assert two.group_ids.tolist() == new_ids.tolist()
    assert torch.equal(roll1.token_ids, pool_single_draw(pol, rewards).token_ids[torch.tensor(chosen)])


def pool_single_draw(pol, rewards):
    ctx = make_ctx(pol, rewards, prompts=SMALL_PROMPTS)
    return ctx.sample(ctx.sampler.global_batch(0))
