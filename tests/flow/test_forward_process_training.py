"""The forward-process objectives (awm, nft) inside the core trainer on the tiny flow model, and their config checks."""

import json

import pytest
import torch

from mmgrpo.config import ConfigError, TrainConfig, from_dict, load_config
from mmgrpo.trainer import Trainer

from .test_contract import make_policy


def redness(outputs, conds, group_ids=None, **_):
    """Mean red minus mean green/blue of images [N,3,H,W] -> [N]."""
    return outputs[:, 0].mean((1, 2)) - outputs[:, 1:].mean((1, 2, 3))


def constant(outputs, conds, group_ids=None, **_):
    """The same score for every image: every advantage is 0."""
    return torch.ones(outputs.shape[0])


def _cfg(tmp_path, objective, kl_beta=0.0, steps=2):
    return from_dict(TrainConfig, dict(
        data=dict(prompts=["a red circle", "a blue square"], group_size=4),
        loss=dict(objective=objective, kl_beta=kl_beta), advantage=dict(clip=5.0, zero_std="keep"),
        optim=dict(lr=3e-3), batch_size=8, micro_batch_size=4, steps=steps, run_dir=str(tmp_path / "run"),
        sample_every=0, checkpoint_every=0, progress=False, tensorboard=False,
    ))


def _policy():
    return make_policy(sde="ode", guidance_scale=1.0, cfg_in_training=False,
                       forward_process=dict(times_per_sample=2, ema_rate=0.25))


def _metrics(tmp_path):
    return [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("objective", ["awm", "nft"])
def test_trainer_trains_the_lora_with_a_forward_process_objective(tmp_path, objective):
    policy = _policy()
    before = {k: v.clone() for k, v in policy.state_dict_trainable().items()}
    Trainer(_cfg(tmp_path, objective, kl_beta=0.1), policy=policy, rewards=[("redness", redness, 1.0)]).fit()
    lines = _metrics(tmp_path)
    assert len(lines) == 2 and all("fp_loss" in m for m in lines)
    # the LoRA starts as the identity and moves away from the base as it trains
    assert 0 <= lines[0]["kl_ref"] < lines[1]["kl_ref"]
    assert lines[0]["grad_norm"] > 0
    after = policy.state_dict_trainable()
    assert any(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("objective", ["awm", "nft"])
def test_all_advantages_zero_give_exactly_zero_gradient_in_the_trainer(tmp_path, objective):
    policy = _policy()
    before = {k: v.clone() for k, v in policy.state_dict_trainable().items()}
    Trainer(_cfg(tmp_path, objective), policy=policy, rewards=[("constant", constant, 1.0)]).fit()
    lines = _metrics(tmp_path)
    assert [m["grad_norm"] for m in lines] == [0.0, 0.0]     # the passes ran (zero_std keep) and gave 0
    after = policy.state_dict_trainable()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_config_accepts_forward_process_objectives_for_flow_and_refuses_them_for_tokens():
    flow = dict(policy=dict(name="flow", pretrained="unused"), data=dict(prompts=["a red circle"]),
                rewards=[dict(name="shapes")])
    for objective in ("awm", "nft"):
        cfg = load_config(None, [f"loss.objective={objective}"], base=flow)
        assert cfg.loss.objective == objective
    with pytest.raises(ConfigError, match="beta"):
        load_config(None, ["loss.objective=awm", "loss.objective_params.beta=2"], base=flow)
    tokens = dict(policy=dict(name="toy_tokens"), data=dict(prompts=["a"]), rewards=[dict(name="toy_match")])
    with pytest.raises(ConfigError, match="forward_process"):
        load_config(None, ["loss.objective=nft"], base=tokens)
