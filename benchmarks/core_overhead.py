"""Trainer overhead on the tiny token policy: the loop's training phase vs raw forward+backward+step.

Prints JSON. Both variants run side by side in one process on the same rollout, so the ratio (not the
absolute time) is the result. Goal: ratio < 1.10 at a realistic batch.

    python benchmarks/core_overhead.py [--hidden 512 --length 64 --batch 256 --repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import torch

from mmgrpo.config import load_config
from mmgrpo.trainer import Trainer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--length", type=int, default=64)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--micro", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(None, base={
            "policy": {"name": "toy_tokens", "vocab": 64, "length": a.length, "num_conds": 64, "hidden": a.hidden},
            "rewards": [{"name": "toy_match", "vocab": 64, "num_conds": 64}],
            "data": {"prompts": [str(i) for i in range(64)], "group_size": 8},
            "batch_size": a.batch, "micro_batch_size": a.micro, "grad_accum": a.batch // a.micro,
            "steps": a.repeats + 1, "run_dir": tmp, "progress": False, "tensorboard": False, "sample_every": 0,
            "checkpoint_every": 0, "advantage": {"zero_std": "keep"},
        })
        t = Trainer(cfg)
        t._open_run_dir(resume=False)
        loop, sample, reward, raw = [], [], [], []

        def raw_update(rollout, adv):
            t0 = time.perf_counter()
            for start in range(0, len(rollout), a.micro):
                mb = rollout.select(torch.arange(start, start + a.micro))
                logp = t.policy.log_prob(mb, slice(0, mb.num_positions)).log_probs
                ratio = torch.exp(logp - mb.log_probs)
                loss = -(ratio * adv[start:start + a.micro, None]).mean() / (len(rollout) // a.micro)
                loss.backward()
            torch.nn.utils.clip_grad_norm_(t.params, 1.0)
            t.optimizer.step()
            t.optimizer.zero_grad(set_to_none=True)
            return time.perf_counter() - t0

        # interleaved: trainer step, then the raw update on the same rollout, so load changes hit both alike
        for step in range(a.repeats + 1):
            m = t.train_step(step)
            r = raw_update(t._last_rollout, torch.randn(len(t._last_rollout)))
            if step:                                             # the first round warms up allocators
                loop.append(m["time/train"])
                sample.append(m["time/sample"])
                reward.append(m["time/reward"])
                raw.append(r)
    med = statistics.median
    print(json.dumps({
        "benchmark": "core_overhead", "policy": f"toy_tokens hidden={a.hidden} length={a.length}",
        "batch": a.batch, "micro_batch": a.micro, "threads": torch.get_num_threads(), "repeats": a.repeats,
        "raw_fwd_bwd_step_s": med(raw), "trainer_train_phase_s": med(loop),
        "trainer_sample_phase_s": med(sample), "trainer_reward_phase_s": med(reward),
        "overhead_ratio": med(loop) / med(raw), "goal": "overhead_ratio < 1.10",
    }, indent=2))


if __name__ == "__main__":
    main()
