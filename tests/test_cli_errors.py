"""Every command's expected failures (issue 11): one line on stderr naming the file or key and what would be
right, exit 2 for bad input and 1 for a failed run, no traceback unless --debug."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmgrpo import cli

ROOT = Path(__file__).resolve().parents[1]
TOY = str(ROOT / "configs" / "toy" / "tokens.yaml")
FLOW = "pkg://mmgrpo.configs/flow/shapes_demo.yaml"
QUIET = ["progress=false", "tensorboard=false", "sample_every=0"]


@pytest.fixture(autouse=True)
def no_debug(monkeypatch):
    monkeypatch.setattr(cli, "_debug", False)


def run(capsys, *argv):
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def latin1(tmp_path):
    p = tmp_path / "latin1.txt"
    p.write_bytes("caf\xe9\n".encode("latin-1"))
    return p


@pytest.mark.parametrize("argv, message", [
    (["train", "nope.yaml"], r"mmgrpo train: config error: config file 'nope.yaml' does not exist"),
    (["train", TOY, "optim.lrr=1"], r"mmgrpo train: config error: unknown config key 'optim.lrr'; valid keys here: .*lr"),
    (["train", TOY, "optim.lr=.nan"], r"optim.lr: nan is out of range; valid: a finite number > 0"),
    (["train", TOY, "log_every=0"], r"log_every: 0 is out of range; valid: an integer >= 1"),
    (["train", FLOW, "policy.num_steps=1"], r"mmgrpo train: config error: policy.num_steps: 1 is out of range; "
                                            r"valid: an integer >= 2"),
    (["train", TOY, "policy={_component_: 5}"], r"policy._component_: expected a string"),
    (["train", "pkg://no_such_pkg/x.yaml"], r"package 'no_such_pkg' is not installed"),
    (["train"], r"mmgrpo train: the following arguments are required: config \(`mmgrpo train -h` for usage\)"),
    (["eval", TOY, "--samples", "-1"], r"mmgrpo eval: argument --samples: must be an integer >= 1, got -1"),
    (["eval", TOY, "--samples", "x"], r"mmgrpo eval: argument --samples: expected an integer >= 1, got 'x'"),
    (["sample", TOY, "--prompt", "0", "--num", "-2"], r"mmgrpo sample: argument --num: must be an integer >= 1, got -2"),
    (["sample", TOY, "--prompt", "0", "--seed", "-1"], r"argument --seed: must be an integer >= 0, got -1"),
    (["eval", TOY, "--lora", "/no/such/lora"], r"mmgrpo eval: --lora '/no/such/lora' does not exist; give a directory"),
    (["list", "nothing"], r"mmgrpo list: unknown kind 'nothing'; choose one of advantages"),
    (["plot", "/no/such/run"], r"mmgrpo plot: "),
    (["frobnicate"], r"mmgrpo: unknown command 'frobnicate'; valid commands: train, eval"),
])
def test_bad_input_is_one_line_with_exit_2(capsys, argv, message):
    import re

    rc, _, err = run(capsys, *argv)
    assert rc == 2, err
    assert re.search(message, one_line(err)), err


def test_non_utf8_prompt_file_names_the_file_in_train_and_eval(capsys, latin1, tmp_path):
    for cmd, attr in (("train", "prompts_file"), ("eval", "eval_prompts_file")):
        rc, _, err = run(capsys, cmd, TOY, f"data.{attr}={latin1}", f"run_dir={tmp_path / 'run'}")
        assert rc == 2
        assert f"prompt file '{latin1}' is not UTF-8 text (byte 3 is 0xe9); save it as UTF-8" in one_line(err)


@pytest.mark.parametrize("content, message", [
    (b"", r"is empty \(0 bytes\)"),
    (b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":", r"is not a readable safetensors file"),
])
def test_sample_with_a_broken_lora_file_names_it(capsys, tmp_path, content, message):
    import re

    lora = tmp_path / "lora.safetensors"
    lora.write_bytes(content)
    rc, _, err = run(capsys, "sample", FLOW, "--lora", str(lora), "--prompt", "two red circles")
    assert rc == 2
    line = one_line(err)
    assert re.search(rf"mmgrpo sample: --lora '{re.escape(str(lora))}' {message}.*give a directory or .safetensors", line)


def test_lora_directory_without_weights_is_refused(capsys, tmp_path):
    rc, _, err = run(capsys, "eval", FLOW, "--lora", str(tmp_path))
    assert rc == 2 and "holds no .safetensors file" in one_line(err)


def test_train_accepts_pkg_config_paths(capsys, tmp_path):
    rc, out, err = run(capsys, "train", "pkg://mmgrpo.configs/toy/tokens.yaml", "steps=1", "batch_size=16",
                       "micro_batch_size=16", "checkpoint_every=0", f"run_dir={tmp_path / 'run'}", *QUIET)
    assert rc == 0, err
    assert f"run directory: {tmp_path / 'run'}" in out


def test_help_config_prints_every_field_with_doc_and_range(capsys):
    from mmgrpo.config import TrainConfig
    from mmgrpo.modalities.flow.policy import FlowPolicy
    from mmgrpo.schema import describe_fields

    rc, out, _ = run(capsys, "train", "--help-config")
    assert rc == 0
    lines = {ln.split()[0]: ln for ln in out.splitlines()[2:]}
    assert set(lines) == {r.key for r in describe_fields(TrainConfig)}
    assert ">= 1" in lines["log_every"] and "write metrics every k steps" in lines["log_every"]
    rc, out, _ = run(capsys, "train", FLOW, "--help-config", "policy.num_steps=4")
    assert rc == 0
    keys = {ln.split()[0] for ln in out.splitlines()[2:]}
    assert {f"policy.{r.key}" for r in describe_fields(FlowPolicy.Config)} <= keys
    line = next(ln for ln in out.splitlines() if ln.startswith("policy.noise_level "))
    assert ">= 0" in line and "noise level of the SDE" in line
    assert {"rewards.0.weight", "rewards.1.mode", "loss.objective_params.beta"} <= keys
    rc, _, err = run(capsys, "train", "nope.yaml", "--help-config")
    assert rc == 2 and "config file 'nope.yaml' does not exist" in one_line(err)


def test_debug_shows_the_traceback(capsys):
    rc, _, err = run(capsys, "train", TOY, "log_every=0", "--debug")
    assert rc == 2
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("mmgrpo train: config error: log_every")


def test_failed_run_is_exit_1_with_one_line(capsys, tmp_path, monkeypatch):
    # a real reward that raises in the middle of training (tests/helpers/failing_reward.py)
    monkeypatch.setenv("MMGRPO_COMPONENT_PREFIXES", "helpers")
    rc, _, err = run(capsys, "train", TOY, "rewards=[{_component_: 'helpers.failing_reward:FailingReward'}]",
                     "steps=2", "batch_size=16", "micro_batch_size=16", "checkpoint_every=0", "data.eval_prompts=[]",
                     f"run_dir={tmp_path / 'run'}", *QUIET)
    assert rc == 1
    assert "mmgrpo train: training stopped at step 0: " in one_line(err)
    assert "the reward server is down" in err


def test_subprocess_exit_codes_and_no_traceback(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    bad = subprocess.run([sys.executable, "-m", "mmgrpo.cli", "train", TOY, "seed=-1"], capture_output=True,
                         text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip() == ("mmgrpo train: config error: seed: -1 is out of range; valid: an integer in "
                                  "[0, 2^63) (run seed: samples, minibatch order and init derive from it)")
    debug = subprocess.run([sys.executable, "-m", "mmgrpo.cli", "--debug", "sample", TOY, "--prompt", "0", "--num", "0"],
                           capture_output=True, text=True, env=env, timeout=120)
    assert debug.returncode == 2 and "argument --num: must be an integer >= 1, got 0" in debug.stderr


def test_config_reference_page_is_generated_and_lists_every_field():
    from mmgrpo.components import POLICIES
    from mmgrpo.config import TrainConfig, render_reference
    from mmgrpo.schema import describe_fields

    page = (ROOT / "docs" / "config.md").read_text()
    assert page == render_reference(), "docs/config.md is stale: run python scripts/gen_config_doc.py"
    for r in describe_fields(TrainConfig):
        assert f"| `{r.key}` |" in page
    for name in POLICIES.names():
        for r in describe_fields(POLICIES.get(name).Config, "policy."):
            assert f"| `{r.key}` |" in page, (name, r.key)
    readme = (ROOT / "README.md").read_text()
    assert "--debug" in readme and "exit code" in readme and "docs/config.md" in readme
