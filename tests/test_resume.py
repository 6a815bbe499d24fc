"""A run killed with SIGKILL mid-training and resumed ends with the same weights as an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time

import torch
from helpers.paths import ROOT, TOY
from safetensors.torch import load_file

SLOW = ["rewards=[{_component_: 'helpers.slow_reward:SlowToyReward', vocab: 8, num_conds: 8, sleep: 0.25}]",
        "steps=10", "checkpoint_every=2", "keep_checkpoints=3", "batch_size=32", "progress=false",
        "sample_every=0", "optim.ema_decay=0.9", "optim.schedule=cosine", "optim.warmup_steps=2"]


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "tests"), MMGRPO_COMPONENT_PREFIXES="helpers.")


def _train(run, *extra, wait=True):
    cmd = [sys.executable, "-m", "mmgrpo.cli", "train", str(TOY), f"run_dir={run}", *SLOW, *extra]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if wait:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
    return proc


def _final(run):
    ckpt = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
    return load_file(str(ckpt / "policy.safetensors")), load_file(str(ckpt / "ema.safetensors"))


def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    straight = tmp_path / "straight"
    _train(straight, "rewards.0.sleep=0.0")

    killed = tmp_path / "killed"
    proc = _train(killed, wait=False)
    latest = killed / "checkpoints" / "latest"
    deadline = time.time() + 240
    while time.time() < deadline:
        if latest.exists() and latest.read_text().strip() == "step_0000004":
            break
        time.sleep(0.05)
    else:
        proc.kill()
        raise AssertionError("the run never reached its step-4 checkpoint")
    time.sleep(0.3)                                  # now somewhere inside step 5 or 6
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    lines_before = (killed / "metrics.jsonl").read_text().splitlines()

    _train(killed, "--resume")
    a_w, a_ema = _final(straight)
    b_w, b_ema = _final(killed)
    for k in a_w:
        torch.testing.assert_close(a_w[k], b_w[k], atol=1e-6, rtol=0)
    for k in a_ema:
        torch.testing.assert_close(a_ema[k], b_ema[k], atol=1e-6, rtol=0)

    # nothing written before the checkpoint was lost; records after it were replaced, not duplicated
    rows = [json.loads(x) for x in (killed / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "reward/mean" in r]
    assert steps == list(range(1, 11))
    kept = [json.loads(x) for x in lines_before if x.strip()][:5]          # eval at 0 + steps 1..4
    assert rows[:5] == kept
    straight_rows = [json.loads(x) for x in (straight / "metrics.jsonl").read_text().splitlines()]
    assert [r["reward/mean"] for r in rows if "reward/mean" in r] == \
        [r["reward/mean"] for r in straight_rows if "reward/mean" in r]
    assert not list((killed / "checkpoints").glob(".staging*"))


def test_resume_without_checkpoint_says_what_to_do(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mmgrpo.cli", "train", str(TOY), f"run_dir={tmp_path}/r",
                           "--resume", "progress=false"], capture_output=True, text=True, env=_env(), timeout=120)
    assert proc.returncode == 1
    assert "no checkpoint under" in proc.stderr and "start without --resume" in proc.stderr
