"""The trainer end to end on the tiny token world: it learns, splits are equivalent, bad input is caught."""

import json
import math
import subprocess
import sys

import pytest
import torch
from helpers.paths import ROOT, TOY

from mmgrpo.config import ConfigError, load_config
from mmgrpo.trainer import Trainer, TrainingError


def weights(trainer):
    return torch.cat([p.detach().reshape(-1) for p in trainer.params])


def test_cli_train_learns_from_chance(tmp_path):
    """The real CLI path: reward rises from chance (1/8) to > 0.9 on held-out seeds."""
    run = tmp_path / "run"
    out = subprocess.run([sys.executable, "-m", "mmgrpo.cli", "train", str(TOY), f"run_dir={run}",
                          "progress=false"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    first = next(r for r in rows if "reward/mean" in r)["reward/mean"]
    eval_rows = [r for r in rows if "eval/toy_match" in r]
    assert first < 0.2
    assert eval_rows[0]["eval/toy_match"] < 0.25
    assert eval_rows[-1]["eval/toy_match"] > 0.9
    for key in ("zero_std_frac", "clip_frac", "approx_kl", "ratio_min", "ratio_mean", "ratio_max", "grad_norm",
                "time/sample", "time/reward", "time/train", "kl_ref", "reward/std"):
        assert key in rows[1], key
    assert (run / "curves.png").stat().st_size > 1000
    assert (run / "config.yaml").is_file()
    assert "reward: first step" in out.stdout


@pytest.mark.parametrize("aggregation", ["seq_mean", "token_mean", "dr_grpo"])
def test_micro_batch_8x1_equals_2x4(toy_cfg, aggregation):
    ends = []
    for micro, accum in ((8, 1), (2, 4)):
        cfg = toy_cfg("steps=3", "batch_size=16", f"micro_batch_size={micro}", f"grad_accum={accum}",
                      f"loss.aggregation={aggregation}", "inner_epochs=2", "overwrite=true")
        t = Trainer(cfg)
        t.fit()
        ends.append(weights(t))
    assert not torch.equal(ends[0], weights(Trainer(toy_cfg("batch_size=16", "micro_batch_size=8"))))   # training moved the weights
    torch.testing.assert_close(ends[0], ends[1], atol=1e-6, rtol=0)


def test_time_chunks_equal_full_pass(toy_cfg):
    ends = []
    for chunk in ("null", "1"):
        t = Trainer(toy_cfg("steps=3", "batch_size=16", "micro_batch_size=8", f"policy.time_chunk={chunk}",
                            "overwrite=true"))
        t.fit()
        ends.append(weights(t))
    torch.testing.assert_close(ends[0], ends[1], atol=1e-6, rtol=0)


def test_nan_rewards_are_masked_counted_and_training_continues(toy_cfg):
    from mmgrpo.pipelines.toy_tokens import ToyMatchReward

    base = ToyMatchReward()

    def flaky(outputs, conds, **kw):
        r = base(outputs, conds)
        bad = torch.tensor([c in ("0", "1") for c in conds])
        r[bad] = torch.tensor([float("nan"), float("inf")]).repeat(int(bad.sum()))[: int(bad.sum())]
        return r

    flaky.name = "flaky"
    t = Trainer(toy_cfg("steps=4", "batch_size=64"), rewards=[("flaky", flaky, 1.0)])
    t.fit()
    rows = [json.loads(x) for x in (t.run_dir / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "reward/nonfinite_count" in r]
    assert len(train_rows) == 4
    # batch 64 = all 8 prompts x 8; prompts "0" and "1" give 16 non-finite scores every step
    assert all(r["reward/nonfinite_count"] == 16 for r in train_rows)
    assert all(math.isfinite(r["reward/mean"]) for r in train_rows)
    assert all(math.isfinite(r["grad_norm"]) for r in train_rows)


def test_reward_that_raises_names_the_reward(toy_cfg):
    def broken(outputs, conds, **kw):
        raise ValueError("model server exploded")

    broken.name = "my_broken_reward"
    t = Trainer(toy_cfg("steps=2"), rewards=[("my_broken_reward", broken, 1.0)])
    with pytest.raises(TrainingError, match="reward 'my_broken_reward' raised ValueError: model server exploded"):
        t.fit()


def test_reward_with_wrong_length_is_refused(toy_cfg):
    def short(outputs, conds, **kw):
        return torch.zeros(3)

    short.name = "short"
    with pytest.raises(TrainingError, match="reward 'short' returned 3 scores for (32|64) samples"):
        Trainer(toy_cfg("steps=1"), rewards=[("short", short, 1.0)]).fit()


@pytest.mark.parametrize("override, message", [
    ("optim.lrr=0.1", "unknown config key 'optim.lrr'; valid keys here: .*lr"),
    ("nonsense=1", "unknown config key 'nonsense'"),
    ("optim.lr=fast", "optim.lr: expected a number, got str 'fast'"),
    ("batch_size=1.5", "batch_size: expected an integer"),
    ("data.group_size=128", "data.group_size=128 is larger than batch_size=64"),
    ("batch_size=60", "batch_size=60 must be a multiple of data.group_size=8"),
    ("loss.objective=ppo9", "loss.objective: unknown name 'ppo9'; valid names: .*clip"),
    ("advantage.name=foo", "advantage.name: unknown name 'foo'; valid names: .*grpo"),
    ("loss.objective_params={eps: 0.1}", "unknown parameter loss.objective_params.eps; valid parameters: eps_low"),
    ("advantage.zero_std=drop", "advantage.zero_std: 'drop' is not valid; choose one of \\['mask', 'keep'\\]"),
    ("policy.name=nope", "policy.name: unknown policy 'nope'; valid names: .*toy_tokens"),
    ("policy.vocabulary=3", "unknown config key 'policy.vocabulary'; valid keys here: .*vocab"),
    ("rewards.0.mode=lenient", "mode must be 'partial' or 'strict'"),
    ("data.prompts_file=/does/not/exist.txt", "prompt file '/does/not/exist.txt' does not exist"),
])
def test_bad_config_fails_before_work_with_the_key(toy_cfg, override, message):
    with pytest.raises(ConfigError, match=message):
        cfg = toy_cfg(override)
        Trainer(cfg)


def test_missing_config_file_and_empty_prompts(tmp_path, toy_cfg):
    with pytest.raises(ConfigError, match="config file '.*nope.yaml' does not exist"):
        load_config(tmp_path / "nope.yaml")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(ConfigError, match="prompt list is empty"):
        Trainer(toy_cfg("data.prompts=[]", f"data.prompts_file={empty}"))


def test_exponent_floats_without_a_dot_are_numbers(toy_cfg, tmp_path):
    # YAML 1.1 (PyYAML's default) reads `1e-4` as a string; configs and overrides read it as the float it is
    cfg = toy_cfg("optim.lr=1e-4", "loss.objective_params={eps_low: 2e-1}")
    assert cfg.optim.lr == 1e-4 and cfg.loss.objective_params["eps_low"] == 0.2
    path = tmp_path / "c.yaml"
    path.write_text("optim: {lr: 3E-5, eps: 1.0e-8}\nrun_dir: 1e3x\n")
    from mmgrpo.config import load_yaml
    data = load_yaml(path)
    assert data == {"optim": {"lr": 3e-5, "eps": 1e-8}, "run_dir": "1e3x"}


def test_component_path_outside_allow_list_is_refused(toy_cfg):
    with pytest.raises(ConfigError, match="outside the allowed module prefixes"):
        toy_cfg("policy={_component_: 'os:system'}")


def test_fresh_run_refuses_to_clobber_checkpoints(toy_cfg):
    Trainer(toy_cfg("steps=2")).fit()
    with pytest.raises(TrainingError, match="already holds checkpoints .* --resume"):
        Trainer(toy_cfg("steps=2")).fit()


def test_micro_batch_must_divide_local_samples(toy_cfg):
    with pytest.raises(ConfigError, match="micro_batch_size=24 x grad_accum=1 = 24 samples per optimizer step"):
        Trainer(toy_cfg("micro_batch_size=24"))


def test_plot_and_list_commands(tmp_path):
    run = tmp_path / "run"
    subprocess.run([sys.executable, "-m", "mmgrpo.cli", "train", str(TOY), f"run_dir={run}", "steps=3",
                    "progress=false"], check=True, capture_output=True, timeout=120)
    (run / "curves.png").unlink()
    out = subprocess.run([sys.executable, "-m", "mmgrpo.cli", "plot", str(run)], capture_output=True, text=True)
    assert out.returncode == 0 and (run / "curves.png").is_file()
    out = subprocess.run([sys.executable, "-m", "mmgrpo.cli", "plot", str(tmp_path / "nothing")],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "metrics.jsonl does not exist" in out.stderr
    out = subprocess.run([sys.executable, "-m", "mmgrpo.cli", "list"], capture_output=True, text=True, cwd=ROOT)
    for name in ("grpo", "rloo", "gspo", "sapo", "cispo", "seq_mean", "k3", "toy_tokens", "toy_match"):
        assert name in out.stdout
