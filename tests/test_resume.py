"""A run killed with SIGKILL mid-training and resumed ends as an uninterrupted run: one process, and two
processes under DDP and under FSDP2 (`accelerate launch` with the shipped CPU configs; the launcher and
every rank killed at once)."""

import json
import signal
import subprocess
import time

import pytest
import torch
from helpers.launch import env, kill_tree, launcher
from helpers.paths import TOY
from safetensors.torch import load_file

SLOW_REWARD = "rewards=[{_component_: 'helpers.slow_reward:SlowToyReward', vocab: 8, num_conds: 8, sleep: 0.4}]"
COMMON = [SLOW_REWARD, "keep_checkpoints=3", "batch_size=32", "progress=false", "sample_every=0",
          "optim.ema_decay=0.9", "optim.schedule=cosine", "optim.warmup_steps=2"]
# engine -> (run settings, the checkpoint step after which the kill lands, final step)
RUNS = {
    None: (["steps=10", "checkpoint_every=2"], 4, 10),
    # two ranks of 16 samples, two optimizer steps per training step: Adam moments and EMA both matter
    "ddp": (["steps=4", "checkpoint_every=2", "micro_batch_size=8", "tensorboard=false"], 2, 4),
    "fsdp2": (["steps=4", "checkpoint_every=2", "micro_batch_size=8", "tensorboard=false"], 2, 4),
}


def _train(engine, run, *extra, wait=True):
    settings = RUNS[engine][0]
    cmd = [*launcher(engine), "-m", "mmgrpo.cli", "train", str(TOY), f"run_dir={run}", *COMMON, *settings, *extra]
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if wait:
        out, err = _communicate(proc)
        assert proc.returncode == 0, err[-3000:]
    return proc


def _communicate(proc, timeout=300):
    """Output of a finished run; a run still going after `timeout` (a hang) is killed with its ranks first."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc.pid)
        out, err = proc.communicate()
        raise AssertionError(f"the run did not finish within {timeout} s:\n{err[-3000:]}") from None


def _latest(run):
    latest = run / "checkpoints" / "latest"
    return latest.read_text().strip() if latest.exists() else None


def _final(run):
    ckpt = run / "checkpoints" / _latest(run)
    optim = {f.name: load_file(str(f)) for f in sorted(ckpt.glob("optimizer_rank*.safetensors"))}
    state = json.loads((ckpt / "trainer_state.json").read_text())
    return load_file(str(ckpt / "policy.safetensors")), load_file(str(ckpt / "ema.safetensors")), optim, state


def _close(a, b):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0, msg=lambda m, k=k: f"{k}: {m}")


@pytest.mark.parametrize("engine", [None, "ddp", "fsdp2"], ids=["one_process", "ddp", "fsdp2"])
def test_sigkill_then_resume_matches_uninterrupted(tmp_path, engine):
    _, kill_after, last = RUNS[engine]
    straight = tmp_path / "straight"
    _train(engine, straight, "rewards.0.sleep=0.0")

    killed = tmp_path / "killed"
    proc = _train(engine, killed, wait=False)
    want = f"step_{kill_after:07d}"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if _latest(killed) == want:
            break
        time.sleep(0.05)
    else:
        kill_tree(proc.pid)
        _, err = proc.communicate()
        raise AssertionError(f"the run never reached its {want} checkpoint:\n{err[-3000:]}")
    time.sleep(0.3)                                  # now inside the step after the checkpoint
    killed_pids = kill_tree(proc.pid)                # the launcher and, with two processes, every rank
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert len(killed_pids) >= (1 if engine is None else 3)
    assert _latest(killed) == want, "the kill came too late: the run wrote a later checkpoint first"
    lines_before = (killed / "metrics.jsonl").read_text().splitlines()

    _train(engine, killed, "--resume", "rewards.0.sleep=0.0")      # the pause only gave the kill its moment
    a_w, a_ema, a_opt, a_state = _final(straight)
    b_w, b_ema, b_opt, b_state = _final(killed)
    assert a_state["step"] == b_state["step"] == last
    _close(a_w, b_w)
    _close(a_ema, b_ema)
    assert a_opt.keys() == b_opt.keys()
    for name in a_opt:                               # Adam moments and step counts resumed, not restarted
        _close(a_opt[name], b_opt[name])
    if engine == "fsdp2":                            # really sharded: each rank holds a part of the moments
        assert b_state["engine"] == "fsdp2" and b_state["sharded_optimizer"] and len(b_opt) == 2
        per_rank = [sum(v.numel() for k, v in o.items() if k.endswith(".exp_avg")) for o in b_opt.values()]
        assert sum(per_rank) == sum(w.numel() for w in b_w.values()) and max(per_rank) < sum(per_rank)
    elif engine == "ddp":
        assert b_state["engine"] == "ddp" and not b_state["sharded_optimizer"]

    # nothing written before the checkpoint was lost; records after it were replaced, not duplicated
    rows = [json.loads(x) for x in (killed / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "reward/mean" in r]
    assert steps == list(range(1, last + 1))
    kept = [json.loads(x) for x in lines_before if x.strip()][:kill_after + 1]    # eval at 0 + steps 1..kill_after
    assert rows[:kill_after + 1] == kept
    straight_rows = [json.loads(x) for x in (straight / "metrics.jsonl").read_text().splitlines()]
    assert [r["reward/mean"] for r in rows if "reward/mean" in r] == \
        [r["reward/mean"] for r in straight_rows if "reward/mean" in r]
    assert not list((killed / "checkpoints").glob(".staging*"))


def test_two_processes_resume_from_the_same_checkpoint(tmp_path):
    """Rank 1's RNG file of the newest checkpoint is gone: both ranks fall back to the one before it (each rank
    choosing alone would resume from different steps and run mismatched collectives)."""
    run = tmp_path / "run"
    _train("ddp", run, "rewards.0.sleep=0.0", "steps=4", "optim.ema_decay=null")
    (run / "checkpoints" / "step_0000004" / "rng_rank1.json").unlink()
    proc = _train("ddp", run, "rewards.0.sleep=0.0", "steps=5", "optim.ema_decay=null", "--resume", wait=False)
    out, err = _communicate(proc)
    assert proc.returncode == 0, err[-3000:]
    assert "[process 1] checkpoint step_0000004 is unusable" in out and "rng_rank1.json is missing" in out
    assert "resuming from step_0000002" in out
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "reward/mean" in r] == [1, 2, 3, 4, 5]


def test_resume_without_checkpoint_says_what_to_do(tmp_path):
    proc = subprocess.run([*launcher(None), "-m", "mmgrpo.cli", "train", str(TOY), f"run_dir={tmp_path}/r",
                           "--resume", "progress=false"], capture_output=True, text=True, env=env(), timeout=120)
    assert proc.returncode == 1
    assert "no checkpoint under" in proc.stderr and "start without --resume" in proc.stderr
