"""The shared adapter contract on FlowPolicy over a tiny real SD3 pipeline: replay gives ratio 1."""

import pytest
import torch
from contract import check_replay

from mmgrpo.modalities.flow.policy import FlowPolicy
from mmgrpo.modalities.flow.tiny import tiny_sd3_pipeline
from mmgrpo.rollout import Policy, SampleBatch

TINY = dict(dtype="float32", resolution=16, num_steps=4, eval_num_steps=3, lora_rank=4, lora_alpha=8,
            max_sequence_length=8)


def make_policy(**overrides) -> FlowPolicy:
    return FlowPolicy.from_pipeline(tiny_sd3_pipeline(seed=0), FlowPolicy.Config(**{**TINY, **overrides}))


def perturb_lora(policy, scale=0.3, seed=0):
    """Give the LoRA non-zero B so that replay really exercises the adapter weights."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in policy.trainable_parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


def make_batch(prompts=("a red circle", "a blue square"), group_size=3, step=0) -> SampleBatch:
    conds = [p for p in prompts for _ in range(group_size)]
    gids = torch.arange(len(prompts)).repeat_interleave(group_size)
    return SampleBatch(conds=conds, group_ids=gids, seeds=torch.arange(len(conds)) + 1000 * step,
                       group_seeds=gids + 77 + 1000 * step, step=step)


@pytest.mark.parametrize("overrides", [
    dict(sde="flow_grpo", guidance_scale=4.5, time_chunk=2),                       # Flow-GRPO with CFG
    dict(sde="cps", noise_level=0.8, guidance_scale=1.0, cfg_in_training=False,    # CFG-free, window
         schedule="window", window_size=2),
    dict(sde="dance", noise_level=0.3, shared_group_noise=True, guidance_scale=2.0, time_chunk=3),
    dict(dtype="bfloat16", guidance_scale=4.5, time_chunk=None),                   # bf16 weights, fp32 step math
])
def test_replay_ratio_is_one_for_any_split(overrides):
    policy = make_policy(**overrides)
    perturb_lora(policy)
    assert isinstance(policy, Policy)
    rollout = check_replay(policy, make_batch(), splits=[1, 2, 4, 6])
    assert rollout.log_probs.dtype == torch.float32 and torch.isfinite(rollout.log_probs).all()
    assert rollout.outputs.shape == (6, 3, 16, 16) and rollout.outputs.dtype == torch.float32
    assert 0 <= float(rollout.outputs.min()) and float(rollout.outputs.max()) <= 1


class DriftingPolicy(FlowPolicy):
    """A broken adapter for the negative check: its weights move between sampling and replay."""

    def sample(self, batch, evaluate=False):
        rollout = super().sample(batch, evaluate)
        with torch.no_grad():
            for name, p in self.transformer.named_parameters():
                if "lora_B" in name:
                    p.mul_(1.5)
        return rollout


def test_contract_check_fails_when_replay_differs():
    policy = DriftingPolicy.from_pipeline(tiny_sd3_pipeline(seed=0), FlowPolicy.Config(**TINY))
    perturb_lora(policy)
    with pytest.raises(AssertionError, match="replay ratio off"):
        check_replay(policy, make_batch(), splits=[6])
