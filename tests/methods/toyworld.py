"""Test helpers: the real toy token policy and reward in a CollectContext, two simulated ranks, a training run."""

from __future__ import annotations

import threading
from pathlib import Path

import torch

from mmgrpo.collect import CollectContext
from mmgrpo.components import component
from mmgrpo.groups import GroupSampler
from mmgrpo.pipelines.toy_tokens import ToyLengthReward, ToyMatchReward, ToyTokenPolicy
from mmgrpo.reward import call_reward

ROOT = Path(__file__).resolve().parents[2]
TOY = ROOT / "configs" / "toy" / "tokens.yaml"
PROMPTS = [str(i) for i in range(8)]


def toy_policy(seed: int = 0, **cfg) -> ToyTokenPolicy:
    torch.manual_seed(seed)
    return ToyTokenPolicy(ToyTokenPolicy.Config(**cfg))


def scorer(rewards: list):
    """score(rollout) -> raw [n, K] with the real reward modules, as the trainer's `_score` does."""
    def score(rollout):
        return torch.stack([call_reward(r, rollout.outputs, rollout.conds, rollout.group_ids) for r in rewards], 1)
    return score


class World:
    """`world_size` simulated ranks in threads; gather / all_sum exchange through a barrier like a collective."""

    def __init__(self, world_size: int):
        self.world_size = world_size
        self.barrier = threading.Barrier(world_size)
        self.slots: list = [None] * world_size

    def _exchange(self, rank: int, value):
        self.barrier.wait()
        self.slots[rank] = value
        self.barrier.wait()
        out = list(self.slots)
        self.barrier.wait()
        return out

    def gather(self, rank: int):
        return lambda t: torch.cat(self._exchange(rank, t))

    def gather_object(self, rank: int):
        return lambda items: [x for part in self._exchange(rank, list(items)) for x in part]

    def all_sum(self, rank: int):
        return lambda vals: [sum(v) for v in zip(*self._exchange(rank, list(vals)))]

    def run(self, fn):
        """fn(rank, world) on every rank in parallel threads; returns the results by rank."""
        results: list = [None] * self.world_size
        errors: list = []

        def target(r):
            try:
                results[r] = fn(r, self)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
                errors.append(exc)
                self.barrier.abort()

        threads = [threading.Thread(target=target, args=(r,)) for r in range(self.world_size)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        if errors:
            raise errors[0]
        return results


def make_ctx(policy, rewards: list, step: int = 0, group_size: int = 4, batch_size: int = 16, seed: int = 0,
             prompts: list | None = None, rank: int = 0, world: World | None = None, weights=None,
             total_steps: int | None = 100) -> CollectContext:
    """A CollectContext over the real toy policy and rewards (this rank's share when `world` is given)."""
    ws = world.world_size if world else 1
    sampler = GroupSampler(prompts or PROMPTS, group_size, batch_size, seed, rank, ws)

    def sample(b):
        with torch.no_grad():
            return policy.sample(b)

    return CollectContext(step=step, batch=sampler.local_batch(step), sample=sample, score=scorer(rewards),
                          sampler=sampler, gather=world.gather(rank) if world else (lambda t: t),
                          all_sum=world.all_sum(rank) if world else (lambda v: list(v)), rank=rank,
                          world_size=ws, policy=policy,
                          reward_weights=list(weights) if weights is not None else [1.0] * len(rewards),
                          total_steps=total_steps,
                          gather_object=world.gather_object(rank) if world else (lambda items: list(items)))


def match_reward(mode: str = "partial", vocab: int = 8, num_conds: int = 8) -> ToyMatchReward:
    return ToyMatchReward(ToyMatchReward.Config(vocab=vocab, num_conds=num_conds, mode=mode))


def length_reward(length: int = 4) -> ToyLengthReward:
    return ToyLengthReward(ToyLengthReward.Config(length=length))


def train_toy(tmp_path, *overrides, steps: int = 60, resume: bool = False, run: str = "run"):
    """Train the toy world through the real trainer; returns (trainer, summary)."""
    from mmgrpo.config import load_config
    from mmgrpo.trainer import Trainer

    base = [f"steps={steps}", "progress=false", "tensorboard=false", "sample_every=0", "overwrite=true",
            f"run_dir={tmp_path / run}", "checkpoint_every=0"]
    cfg = load_config(TOY, base + list(overrides))
    trainer = Trainer(cfg)
    return trainer, trainer.fit(resume=resume)


@component
class BarePolicy(ToyTokenPolicy):
    """The toy policy claiming no optional rollout fields and lacking the perturbation hook (config checks)."""

    provides = ()
    perturb_conditions = None
