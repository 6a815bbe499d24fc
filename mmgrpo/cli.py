"""The `mmgrpo` command line: train, list, plot, plus subcommands that packages add through the
`mmgrpo.commands` entry-point group (demo, eval, sample, serve-reward, reward, ...)."""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import entry_points

from .config import ConfigError


def _commands() -> dict:
    return {ep.name: ep for ep in entry_points(group="mmgrpo.commands")}


def cmd_train(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="mmgrpo train", description="Train a GRPO recipe from a YAML config.")
    p.add_argument("config", help="YAML recipe (see configs/)")
    p.add_argument("overrides", nargs="*", help="key.path=value overrides, e.g. optim.lr=1e-4 steps=50")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in run_dir")
    a = p.parse_intermixed_args(argv)
    from .config import load_config
    from .trainer import Trainer, TrainingError

    try:
        cfg = load_config(a.config, a.overrides)
        trainer = Trainer(cfg)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"mmgrpo: config error: {exc}", file=sys.stderr)
        return 2
    try:
        summary = trainer.fit(resume=a.resume)
    except TrainingError as exc:
        print(f"mmgrpo: {exc}", file=sys.stderr)
        return 1
    if trainer.is_main:
        hist = summary.get("reward_history", [])
        if hist:
            print(f"reward: first step {hist[0]:.4f} -> last step {hist[-1]:.4f}")
        for key in ("eval_before", "eval_after"):
            if summary.get(key):
                print(f"{key}: " + ", ".join(f"{k}={v:.4f}" for k, v in summary[key].items()))
        print(f"run directory: {cfg.run_dir}\n  curves:      {summary.get('plot', '(mmgrpo plot ' + cfg.run_dir + ')')}"
              f"\n  checkpoint:  {summary.get('checkpoint')}\n  tensorboard: tensorboard --logdir {cfg.run_dir}/tb")
    return 0


def cmd_list(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="mmgrpo list", description="Every registered method and component.")
    p.add_argument("kind", nargs="?", help="only this registry (advantages, objectives, aggregation, collectors, schedules, kl, "
                                            "policies, rewards)")
    a = p.parse_args(argv)
    from . import advantages, aggregation, collect, components, kl, objectives, schedules
    from .registry import describe

    regs = {"advantages": advantages.ADVANTAGES, "objectives": objectives.OBJECTIVES,
            "aggregation": aggregation.AGGREGATIONS, "collectors": collect.COLLECTORS,
            "schedules": schedules.SCHEDULES, "kl": kl.KL,
            "policies": components.POLICIES, "rewards": components.REWARDS}
    if a.kind and a.kind not in regs:
        print(f"mmgrpo list: unknown kind {a.kind!r}; choose one of {', '.join(regs)}", file=sys.stderr)
        return 2
    for kind, reg in regs.items():
        if a.kind and kind != a.kind:
            continue
        print(f"{kind}:")
        for e in reg.entries():
            print(f"  {e.name:<22} {describe(e)}")
    if not a.kind:
        print("commands:\n  " + "  ".join([*BUILTIN, *sorted(_commands())]))
    return 0


def cmd_plot(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="mmgrpo plot", description="Draw reward and KL curves of a run to PNG.")
    p.add_argument("run_dir")
    p.add_argument("--out", default=None, help="PNG path (default RUN_DIR/curves.png)")
    a = p.parse_args(argv)
    from .plot import plot_run

    try:
        out = plot_run(a.run_dir, a.out)
    except (FileNotFoundError, ValueError) as exc:
        print(f"mmgrpo plot: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


def _policy_overrides(a) -> list[str]:
    out = list(a.overrides)
    if getattr(a, "lora", None):
        out.append(f"policy.lora_path={a.lora}")
    return out


def _trainer_for(a, extra: list[str]):
    from .config import load_config
    from .trainer import Trainer

    cfg = load_config(a.config, _policy_overrides(a) + extra)
    return cfg, Trainer(cfg)


def cmd_eval(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="mmgrpo eval", description="Held-out rewards of a recipe's policy with fixed "
                                "seeds (the same prompts and seeds every time), as JSON.")
    p.add_argument("config")
    p.add_argument("overrides", nargs="*", help="key.path=value overrides")
    p.add_argument("--lora", help="adapter weights to load (sets policy.lora_path)")
    p.add_argument("--samples", type=int, default=None, help="samples per held-out prompt (eval_group_size)")
    p.add_argument("--save", default=None, help="also write the samples (grid / audio / text) to this prefix")
    a = p.parse_intermixed_args(argv)
    import json
    from pathlib import Path

    extra = [f"eval_group_size={a.samples}"] if a.samples else []
    try:
        cfg, trainer = _trainer_for(a, extra)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"mmgrpo eval: {exc}", file=sys.stderr)
        return 2
    if not trainer.eval_prompts:
        print("mmgrpo eval: the config has no held-out prompts; set data.eval_prompts or data.eval_prompts_file",
              file=sys.stderr)
        return 2
    metrics = trainer.evaluate(save_prefix=Path(a.save) if a.save else None)
    print(json.dumps({"config": a.config, "lora": a.lora, "prompts": len(trainer.eval_prompts),
                      "samples_per_prompt": cfg.eval_group_size, **metrics}, indent=2))
    return 0


def cmd_sample(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="mmgrpo sample", description="Sample a recipe's policy for given prompts and "
                                "write the outputs (image grid / audio / text) with their rewards.")
    p.add_argument("config")
    p.add_argument("overrides", nargs="*", help="key.path=value overrides")
    p.add_argument("--prompt", action="append", required=True, help="a prompt (repeat for several)")
    p.add_argument("--lora", help="adapter weights to load (sets policy.lora_path)")
    p.add_argument("--num", type=int, default=4, help="samples per prompt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="samples/sample", help="output prefix (default samples/sample)")
    a = p.parse_intermixed_args(argv)
    from pathlib import Path

    import torch

    from .groups import fixed_eval_batch

    try:
        _, trainer = _trainer_for(a, [])
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"mmgrpo sample: {exc}", file=sys.stderr)
        return 2
    batch = fixed_eval_batch(a.prompt, a.num, a.seed)
    trainer.policy.eval()
    with torch.no_grad():
        rollout = trainer.policy.sample(batch, evaluate=True)
    raw = trainer.score(rollout)
    out = Path(a.out)
    trainer.policy.save_samples(out, rollout, raw.nan_to_num(0).sum(1))
    for prompt in a.prompt:
        rows = [i for i, c in enumerate(rollout.conds) if c == prompt]
        scores = ", ".join(f"{n}={raw[rows, k].nanmean().item():.3f}" for k, (n, _, _) in enumerate(trainer.rewards))
        print(f"{prompt!r}: {scores}")
    print(f"wrote {', '.join(str(p) for p in sorted(out.parent.glob(out.name + '*')))}")
    return 0


BUILTIN = {"train": cmd_train, "eval": cmd_eval, "sample": cmd_sample, "list": cmd_list, "plot": cmd_plot}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = _commands()
    names = [*BUILTIN, *sorted(extra)]
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: mmgrpo COMMAND [args]\n\ncommands: " + ", ".join(names) +
              "\n\nstart with `mmgrpo demo` (text-to-image GRPO on the built-in shapes world),"
              "\nor `mmgrpo train configs/<family>/<recipe>.yaml`; `mmgrpo COMMAND -h` for details.")
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd in BUILTIN:
        return BUILTIN[cmd](rest)
    if cmd in extra:
        return int(extra[cmd].load()(rest) or 0)
    print(f"mmgrpo: unknown command {cmd!r}; valid commands: {', '.join(names)}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
