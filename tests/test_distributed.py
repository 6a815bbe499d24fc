"""Two processes (accelerate launch, gloo on CPU) equal one process on the same groups.

accelerate's `--cpu` flag starts a single process unless MPI is configured, so two CPU processes are
launched with `--multi_gpu --num_processes 2` (torchrun underneath; gloo, since no GPU is present).
"""

import os
import shutil
import subprocess
import sys

import pytest
import torch
from helpers.paths import ROOT, TOY

WORKER = ROOT / "tests" / "helpers" / "dist_worker.py"
COMMON = ["steps=3", "batch_size=32", "micro_batch_size=4", "progress=false", "tensorboard=false",
          "sample_every=0", "loss.aggregation=token_mean", "inner_epochs=2", "data.eval_prompts=[]"]


@pytest.mark.skipif(shutil.which("accelerate") is None and not (ROOT / ".venv/bin/accelerate").exists(),
                    reason="accelerate CLI not installed")
def test_two_processes_equal_one(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "tests"), CUDA_VISIBLE_DEVICES="")
    one = tmp_path / "one.pt"
    # An optimizer step must see the same samples on both sides: one process holds all 32 (4 x accumulation 8),
    # each of two processes holds 16 (4 x accumulation 4); two inner epochs give two updates per step.
    subprocess.run([sys.executable, str(WORKER), str(TOY), str(one), f"run_dir={tmp_path / 'r1'}", *COMMON,
                    "grad_accum=8"],
                   check=True, env=env, timeout=300, capture_output=True)
    two = tmp_path / "two.pt"
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--multi_gpu",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    res = subprocess.run([*launcher, str(WORKER), str(TOY), str(two), f"run_dir={tmp_path / 'r2'}", *COMMON,
                          "grad_accum=4"], env=env, timeout=300, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    a, b = torch.load(one), torch.load(two)
    assert a["world"] == 1 and b["world"] == 2
    torch.testing.assert_close(a["advantages"], b["advantages"], atol=1e-6, rtol=0)
    assert a["weights"].abs().sum() > 0
    torch.testing.assert_close(a["weights"], b["weights"], atol=1e-6, rtol=0)
