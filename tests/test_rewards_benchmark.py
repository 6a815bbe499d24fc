"""Smoke run of benchmarks/rewards.py on two rewards: the tiny-checkpoint setup, the server process (with
the tiny open_clip architecture registered in it, for hpsv2) and token-id outputs over HTTP (toy_match)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_prints_one_row_per_reward_and_batch(tmp_path):
    out = tmp_path / "r.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "rewards.py"), "--rewards", "hpsv2,toy_match",
                           "--batches", "1,3", "--min-time", "0.01", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report == json.loads(out.read_text())
    rows = report["results"]
    assert [(r["reward"], r["batch"]) for r in rows] == [("hpsv2", 1), ("hpsv2", 3), ("toy_match", 1), ("toy_match", 3)]
    assert all(r["in_process_sps"] > 0 and r["server_sps"] > 0 for r in rows)


def test_unknown_reward_is_refused_with_the_valid_names():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "rewards.py"), "--rewards", "nope"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unknown rewards ['nope']" in proc.stderr and "pickscore" in proc.stderr
