"""benchmarks/prefix_sharing.py at a tiny setting: the JSON it prints, and shared-prefix gradients equal naive ones."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
KEYS = {"prompt_len", "completion_len", "group", "repeats", "layers", "hidden", "vocab", "params", "threads",
        "naive_s", "shared_s", "naive_all_s", "shared_all_s", "ratio", "max_abs_logp_diff",
        "max_abs_entropy_diff", "max_abs_grad_diff", "max_abs_grad"}


def test_prefix_sharing_benchmark_tiny(capsys):
    spec = importlib.util.spec_from_file_location("prefix_sharing", ROOT / "benchmarks" / "prefix_sharing.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    threads = torch.get_num_threads()
    try:
        out = mod.main(["--prompt-len", "48", "--completion-len", "6", "--group", "3", "--repeats", "1",
                        "--layers", "2", "--hidden", "64", "--vocab", "64", "--temperature", "0.7", "--threads", "1"])
    finally:
        torch.set_num_threads(threads)                                             # main sets 1 thread
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == out and KEYS <= set(out)
    assert out["prompt_len"] == 48 and out["group"] == 3 and len(out["naive_all_s"]) == 1
    assert out["naive_s"] > 0 and out["shared_s"] > 0 and out["ratio"] > 0         # timings not asserted
    assert out["max_abs_grad"] > 1e-3                                              # the gradient is not zero
    assert out["max_abs_grad_diff"] < 1e-4
    assert out["max_abs_logp_diff"] < 1e-4 and out["max_abs_entropy_diff"] < 1e-4
