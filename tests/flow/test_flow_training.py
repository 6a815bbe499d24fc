"""FlowPolicy inside the core trainer: a short GRPO run with the reference KL, a checkpoint and a LoRA export."""

import json

import torch

from mmgrpo.config import TrainConfig, from_dict
from mmgrpo.trainer import Trainer

from .test_contract import make_policy


def redness(outputs, conds, group_ids=None, **_):
    """Mean red minus mean green/blue of images [N,3,H,W] -> [N]."""
    return outputs[:, 0].mean((1, 2)) - outputs[:, 1:].mean((1, 2, 3))


def test_trainer_runs_flow_grpo_steps_with_reference_kl(tmp_path):
    policy = make_policy(time_chunk=2)
    before = {k: v.clone() for k, v in policy.state_dict_trainable().items()}
    cfg = from_dict(TrainConfig, dict(
        data=dict(prompts=["a red circle", "a blue square"], group_size=4),
        loss=dict(objective="clip", objective_params=dict(eps_low=1e-4), kl_beta=0.04),
        advantage=dict(clip=5.0), optim=dict(lr=3e-3), batch_size=8, micro_batch_size=4, steps=2,
        run_dir=str(tmp_path / "run"), sample_every=0, checkpoint_every=0, progress=False, tensorboard=False,
    ))
    Trainer(cfg, policy=policy, rewards=[("redness", redness, 1.0)]).fit()
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 2
    # the first minibatch replays its own samples: ratios stay within the tiny Flow-GRPO clip range
    assert all(abs(m["ratio_mean"] - 1) < 1e-3 for m in lines)
    # KL to the reference grows from 0 once the LoRA has moved
    assert lines[0]["kl_ref"] >= 0 and lines[1]["kl_ref"] > 0
    after = policy.state_dict_trainable()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    exported = list((tmp_path / "run" / "checkpoints").glob("step_*/export/*.safetensors"))
    assert exported, "the checkpoint has no diffusers LoRA export"
