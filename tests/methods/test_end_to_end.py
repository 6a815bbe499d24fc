"""Every registered estimator, objective, aggregation and catalog collector trains the toy through the real trainer.

The toy starts at ~0.09 (chance 1/8 per token); every run must lift the held-out reward by more than 0.3 within
60 steps, so a sign error anywhere (advantage, ratio, clip side, aggregation weight) fails. A resumed run must
end exactly where an uninterrupted one does, stateful methods (the SPO trackers) and schedules included.
"""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

import mmgrpo.methods  # noqa: F401  (registers the catalog)
from mmgrpo import advantages, aggregation, objectives

from .toyworld import train_toy

RISE = 0.3

ESTIMATOR_OVERRIDES = {
    "ngrpo": ["advantage.zero_std=keep", "loss.objective=asym_clip", "loss.objective_params={}"],
    "spo": ["advantage.zero_std=keep"],
    "dgpo": ["loss.kl_beta=0.0"],
}


def _rise(summary) -> float:
    return summary["eval_after"]["eval/toy_match"] - summary["reward_history"][0]


@pytest.mark.parametrize("name", advantages.names())
def test_every_estimator_learns_the_toy(tmp_path, name):
    _, s = train_toy(tmp_path, f"advantage.name={name}", *ESTIMATOR_OVERRIDES.get(name, []))
    assert _rise(s) > RISE, (name, s["reward_history"][0], s["eval_after"])


# forward-process objectives (awm, nft) regress a flow policy's clean samples; tests/flow trains them
@pytest.mark.parametrize("name", [n for n in objectives.names()
                                  if getattr(objectives.get(n), "consumes", "log_prob") != "forward_process"])
def test_every_objective_learns_the_toy(tmp_path, name):
    _, s = train_toy(tmp_path, f"loss.objective={name}", "loss.objective_params={}")
    assert _rise(s) > RISE, (name, s["reward_history"][0], s["eval_after"])


@pytest.mark.parametrize("name", aggregation.names())
def test_every_aggregation_learns_the_toy_with_variable_lengths(tmp_path, name):
    # stop token 5 is the target of no condition at position 0..3 for stride 3 only sometimes, so lengths vary
    _, s = train_toy(tmp_path, f"loss.aggregation={name}", "policy.stop_token=5")
    assert _rise(s) > RISE, (name, s["reward_history"][0], s["eval_after"])


def test_segment_grpo_with_per_segment_reward_columns(tmp_path):
    _, s = train_toy(tmp_path, "advantage.name=segment_grpo", "advantage.params={columns: [0, 1]}",
                     "rewards=[{name: toy_match}, {name: toy_match, mode: strict, label: strict}]")
    assert _rise(s) > RISE


def test_etr_macro_elasticity_through_the_trainer(tmp_path):
    _, s = train_toy(tmp_path, "loss.objective=etr", "loss.objective_params={micro: 1.0, macro: 1.0}")
    assert _rise(s) > RISE


def test_balanced_aggregation_micro_batching_equals_one_batch(tmp_path):
    """With the step-wide bucket counts, micro-batch 16 x accumulation 4 gives the same update as 64 x 1."""
    common = ["loss.aggregation=balanced", "policy.stop_token=5", "data.eval_prompts=[]"]
    one, _ = train_toy(tmp_path, *common, "micro_batch_size=64", "grad_accum=1", steps=2, run="one")
    four, _ = train_toy(tmp_path, *common, "micro_batch_size=16", "grad_accum=4", steps=2, run="four")
    for a, b in zip(one.params, four.params):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


LENGTH = "{_component_: 'mmgrpo.pipelines.toy_tokens:ToyLengthReward', weight: 0.3}"
COLLECTORS = {
    "dynamic": (["sampling={name: dynamic, max_rounds: 3}"], None),
    "d3s": (["sampling={name: d3s, keep_ratio: {schedule: linear, start: 0.5, end: 1.0}}",
             "advantage.name=d3s_tokens", "advantage.params={token_ratio: {schedule: linear, start: 0.5, end: 1.0}}"],
            None),
    "uncertainty_alloc": (["sampling={name: uncertainty_alloc}"], None),
    "lope": (["sampling={name: lope, fail_threshold: 0.25}"], "policy in collectors"),
    "reward_switch": (["policy.stop_token=0", f"rewards=[{{name: toy_match}}, {LENGTH}]",
                       "sampling={name: reward_switch, correct: 0, penalties: [1], correct_threshold: 0.75}"], None),
    "posterior_gate": (["policy.stop_token=0", f"rewards=[{{name: toy_match}}, {LENGTH}]",
                        "sampling={name: posterior_gate, outcome: 0, process: [1], threshold: 0.75}"], None),
    "length_budget": (["policy.stop_token=0",
                       "sampling={name: length_budget, budget: {schedule: linear, start: 4, end: 3}, weight: 0.5}"],
                      None),
    "prioritized": (["sampling={name: prioritized}", "advantage.name=spo", "advantage.zero_std=keep"], None),
}


@pytest.mark.parametrize("name", sorted(COLLECTORS))
def test_every_catalog_collector_learns_the_toy(tmp_path, name):
    overrides, need = COLLECTORS[name]
    _, s = train_toy(tmp_path, *overrides)
    assert _rise(s) > RISE, (name, s["reward_history"][0], s["eval_after"])


def test_resume_restores_trackers_and_schedules_exactly(tmp_path):
    """SPO's estimator and collector trackers go into methods.json; Hölder's p follows its schedule after resume."""
    run = ["advantage.name=spo", "advantage.zero_std=keep", "sampling={name: prioritized}",
           "loss.objective=holder", "loss.objective_params={p: {schedule: linear, start: 2.0, end: 0.0}}",
           "loss.aggregation=balanced", "checkpoint_every=5", "keep_checkpoints=3"]
    straight, _ = train_toy(tmp_path, *run, steps=10, run="straight")
    # a run interrupted after its step-5 checkpoint: only that checkpoint and the metrics written until then
    ck = tmp_path / "straight" / "checkpoints"
    part = tmp_path / "resumed"
    (part / "checkpoints").mkdir(parents=True)
    shutil.copytree(ck / "step_0000005", part / "checkpoints" / "step_0000005")
    (part / "checkpoints" / "latest").write_text("step_0000005")
    shutil.copy(tmp_path / "straight" / "metrics.jsonl", part / "metrics.jsonl")
    resumed, _ = train_toy(tmp_path, *[x for x in run if "overwrite" not in x], steps=10, run="resumed",
                           resume=True)
    a = load_file(str(ck / "step_0000010" / "policy.safetensors"))
    b = load_file(str(part / "checkpoints" / "step_0000010" / "policy.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=0, rtol=0)
    assert straight.estimator.state_dict() == resumed.estimator.state_dict()
    assert straight.collector.state_dict() == resumed.collector.state_dict()
    saved = json.loads((ck / "step_0000005" / "methods.json").read_text())
    assert set(saved) == {"estimator", "collector"} and saved["estimator"]["stats"]
