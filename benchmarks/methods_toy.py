"""Side-by-side sanity table of every registered method on the tiny token task; prints JSON.

For each estimator (with the `clip` objective), each objective (with `grpo`) and each catalog collector, over a
few seeds: the held-out reward after a fixed step budget and the steps until the batch reward first reaches a
target. Each method runs with its documented config snippet (docs/methods.md) on top of configs/toy/tokens.yaml.
This checks that every method trains; it is not a claim about the papers' results.

    python benchmarks/methods_toy.py --steps 60 --seeds 0 1 2 --target 0.7 > methods_toy.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "configs" / "toy" / "tokens.yaml"
LENGTH = {"_component_": "mmgrpo.pipelines.toy_tokens:ToyLengthReward", "weight": 0.3}
# collectors whose defaults do nothing on the toy get toy-sized settings (as in tests/methods/test_end_to_end.py)
COLLECTOR_SETTINGS = {
    "d3s": {"sampling": {"name": "d3s", "keep_ratio": {"schedule": "linear", "start": 0.5, "end": 1.0}}},
    "lope": {"sampling": {"name": "lope", "fail_threshold": 0.25}},
    "reward_switch": {"policy": {"stop_token": 0}, "rewards": [{"name": "toy_match"}, LENGTH],
                      "sampling": {"name": "reward_switch", "correct": 0, "penalties": [1],
                                   "correct_threshold": 0.75}},
    "posterior_gate": {"policy": {"stop_token": 0}, "rewards": [{"name": "toy_match"}, LENGTH],
                       "sampling": {"name": "posterior_gate", "outcome": 0, "process": [1], "threshold": 0.75}},
    "length_budget": {"policy": {"stop_token": 0},
                      "sampling": {"name": "length_budget", "weight": 0.5,
                                   "budget": {"schedule": "linear", "start": 4, "end": 3}}},
    "prioritized": {"sampling": {"name": "prioritized"}, "advantage": {"name": "spo", "zero_std": "keep"}},
}


def merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = {**out[k], **v} if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "sampling" else v
    return out


def method_config(kind: str, name: str) -> dict:
    """The toy config with the method's documented snippet (or toy-sized collector settings) applied."""
    from mmgrpo import advantages, collect, objectives
    from mmgrpo.config import load_yaml
    from mmgrpo.methods.docs import snippet

    base = load_yaml(TOY)
    if kind == "collectors" and name in COLLECTOR_SETTINGS:
        return merge(base, COLLECTOR_SETTINGS[name])
    reg = {"advantages": advantages.ADVANTAGES, "objectives": objectives.OBJECTIVES,
           "collectors": collect.COLLECTORS}[kind]
    return merge(base, yaml.safe_load(snippet(kind, name, reg.get(name))))


def run_one(cfg_dict: dict, steps: int, seed: int, target: float) -> dict:
    from mmgrpo.config import load_config
    from mmgrpo.trainer import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(None, [f"steps={steps}", f"seed={seed}", "progress=false", "tensorboard=false",
                                 "sample_every=0", "checkpoint_every=0", "overwrite=true", f"run_dir={tmp}/run"],
                          base=cfg_dict)
        t0 = time.perf_counter()
        summary = Trainer(cfg).fit()
        seconds = time.perf_counter() - t0
    hist = summary["reward_history"]
    reach = next((i + 1 for i, r in enumerate(hist) if r >= target), None)
    return {"seed": seed, "eval_before": summary["eval_before"]["eval/toy_match"],
            "eval_after": summary["eval_after"]["eval/toy_match"], "first_step_reward": hist[0],
            "steps_to_target": reach, "seconds": round(seconds, 2)}


def summarize(runs: list[dict]) -> dict:
    after = [r["eval_after"] for r in runs if "eval_after" in r]
    reach = [r["steps_to_target"] for r in runs if r.get("steps_to_target") is not None]
    return {"eval_after_mean": round(statistics.fmean(after), 4) if after else None,
            "eval_after_std": round(statistics.pstdev(after), 4) if len(after) > 1 else 0.0,
            "steps_to_target_mean": round(statistics.fmean(reach), 1) if reach else None,
            "reached_target": f"{len(reach)}/{len(runs)}"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=60, help="training steps per run (the fixed budget)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="run seeds")
    p.add_argument("--target", type=float, default=0.7, help="batch reward whose first crossing is timed")
    p.add_argument("--kinds", nargs="+", default=["advantages", "objectives", "collectors"],
                   choices=["advantages", "objectives", "collectors"])
    p.add_argument("--only", nargs="*", default=None, help="restrict to these method names")
    a = p.parse_args(argv)

    import torch

    import mmgrpo.methods  # noqa: F401  (registers the catalog)
    from mmgrpo import advantages, collect, objectives

    torch.set_num_threads(1)
    names = {"advantages": advantages.names(), "objectives": objectives.names(), "collectors": collect.names()}
    table: dict = {"task": "toy_tokens (vocab 8, length 4; chance 0.125)", "steps": a.steps, "seeds": a.seeds,
                   "target": a.target, "results": {}}
    for kind in a.kinds:
        table["results"][kind] = {}
        for name in names[kind]:
            if a.only and name not in a.only:
                continue
            runs = []
            for seed in a.seeds:
                try:
                    runs.append(run_one(method_config(kind, name), a.steps, seed, a.target))
                except Exception as exc:  # noqa: BLE001 - one failing method must not hide the others
                    runs.append({"seed": seed, "error": f"{type(exc).__name__}: {exc}"[:300]})
            table["results"][kind][name] = {"summary": summarize(runs), "runs": runs}
            print(f"{kind}/{name}: {table['results'][kind][name]['summary']}", file=sys.stderr, flush=True)
    print(json.dumps(table, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
