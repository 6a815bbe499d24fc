"""Trainer overhead on the tiny token policy, on one process and on two (DDP, FSDP2), side by side.

For each variant the loop's training phase is timed against a raw forward+backward+step over the same
rollout (interleaved, so load changes hit both alike): `overhead_ratio` = trainer / raw. The variants run one
after another from this one invocation: `single` in a plain process, `ddp` and `fsdp2` as two CPU processes
(gloo) through `accelerate launch --config_file configs/accelerate/{ddp,fsdp2}_cpu.yaml`, with the same global
batch split over the ranks. Prints one JSON: per-variant step times (median), and each variant's times as a
ratio of the one-process ones. Goal: overhead_ratio < 1.10 at a realistic batch in every variant.

    python benchmarks/core_overhead.py [--hidden 512 --length 64 --batch 256 --micro 64 --repeats 5]
    python benchmarks/core_overhead.py --variants single      # only one process (the old benchmark)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _launch import free_port, pick_variants, run_json

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("single", "ddp", "fsdp2")


def measure(a) -> dict | None:
    """Run in each process of a variant; rank 0 returns the medians (the other ranks None)."""
    import torch

    from mmgrpo.config import load_config
    from mmgrpo.distributed import make_accelerator
    from mmgrpo.trainer import Trainer

    acc = make_accelerator()
    world = acc.num_processes
    micro = a.micro
    accum = a.batch // world // micro
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(None, base={
            "policy": {"name": "toy_tokens", "vocab": 64, "length": a.length, "num_conds": 64, "hidden": a.hidden},
            "rewards": [{"name": "toy_match", "vocab": 64, "num_conds": 64}],
            "data": {"prompts": [str(i) for i in range(64)], "group_size": 8},
            "batch_size": a.batch, "micro_batch_size": micro, "grad_accum": accum,
            "steps": a.repeats + 1, "run_dir": tmp, "progress": False, "tensorboard": False, "sample_every": 0,
            "checkpoint_every": 0, "advantage": {"zero_std": "keep"},
        })
        t = Trainer(cfg, accelerator=acc)
        t._open_run_dir(resume=False)
        loop, step_all, sample, reward, raw = [], [], [], [], []

        def raw_update(rollout, adv):
            """The same work by hand: micro-batch forwards and backwards (the engine's own sync), clip, Adam."""
            t0 = time.perf_counter()
            n = len(rollout)
            for start in range(0, n, micro):
                mb = rollout.select(torch.arange(start, start + micro))
                logp = t.policy.log_prob(mb, slice(0, mb.num_positions)).log_probs
                ratio = torch.exp(logp - mb.log_probs)
                loss = -(ratio * adv[start:start + micro, None]).mean() / (n // micro)
                loss.backward()
            torch.nn.utils.clip_grad_norm_(t.params, 1.0)
            t.optimizer.step()
            t.optimizer.zero_grad(set_to_none=True)
            return time.perf_counter() - t0

        for step in range(a.repeats + 1):
            acc.wait_for_everyone()
            t0 = time.perf_counter()
            m = t.train_step(step)
            whole = time.perf_counter() - t0
            r = raw_update(t.last.rollout, torch.randn(len(t.last.rollout)))
            if step:                                             # the first round warms up allocators
                loop.append(m["time/train"])
                step_all.append(whole)
                sample.append(m["time/sample"])
                reward.append(m["time/reward"])
                raw.append(r)
    med = statistics.median
    out = {"engine": t.engine, "processes": world, "micro_batch": micro, "grad_accum": accum,
           "samples_per_rank": a.batch // world, "threads_per_process": torch.get_num_threads(),
           "step_s": med(step_all), "trainer_train_phase_s": med(loop), "raw_fwd_bwd_step_s": med(raw),
           "trainer_sample_phase_s": med(sample), "trainer_reward_phase_s": med(reward),
           "overhead_ratio": med(loop) / med(raw)}
    return out if acc.is_main_process else None


def run_variant(name: str, argv: list[str], timeout: float) -> dict:
    """Start one variant (a plain process, or two through accelerate launch) and read its JSON line."""
    script = [str(Path(__file__).resolve()), "--inner", *argv]
    if name == "single":
        cmd = [sys.executable, *script]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(ROOT / "configs" / "accelerate" / f"{name}_cpu.yaml"), "--main_process_port", str(free_port()),
               *script]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    return run_json("core_overhead", name, cmd, env, timeout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--length", type=int, default=64)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--micro", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of single,ddp,fsdp2")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per variant")
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)   # one variant's process
    a = ap.parse_args()
    if a.inner:
        out = measure(a)
        if out is not None:
            print(json.dumps(out), flush=True)
        return
    names = pick_variants("core_overhead", a.variants, VARIANTS)
    for v in names:
        if v != "single" and (a.batch // 2) % a.micro:
            raise SystemExit(f"core_overhead: --micro {a.micro} must divide the {a.batch // 2} samples per rank "
                             f"of --batch {a.batch} on two processes")
    argv = ["--hidden", str(a.hidden), "--length", str(a.length), "--batch", str(a.batch), "--micro", str(a.micro),
            "--repeats", str(a.repeats)]
    results = {v: run_variant(v, argv, a.timeout) for v in names}
    report = {"benchmark": "core_overhead", "policy": f"toy_tokens hidden={a.hidden} length={a.length}",
              "global_batch": a.batch, "repeats": a.repeats, "variants": results}
    if "single" in results:
        base = results["single"]
        report["vs_single"] = {v: {"step_time_ratio": r["step_s"] / base["step_s"],
                                   "train_phase_ratio": r["trainer_train_phase_s"] / base["trainer_train_phase_s"]}
                               for v, r in results.items() if v != "single"}
    try:
        report["load_average_1min"] = os.getloadavg()[0]
    except OSError:
        pass
    report["goal"] = "overhead_ratio < 1.10 in every variant"
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
