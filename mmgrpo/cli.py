"""The `mmgrpo` command line: train, list, plot, plus subcommands that packages add through the
`mmgrpo.commands` entry-point group (demo, eval, sample, serve-reward, reward, ...)."""

from __future__ import annotations

import argparse
import sys
import traceback
from importlib.metadata import entry_points
from pathlib import Path

from .config import ConfigError

# Exit codes: 0 done, 1 the run failed, 2 bad input (config, arguments, files), 130 interrupted.
EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 1, 2, 130
# Expected input errors: a ConfigError names the key or file; the others come from reading what a user gave.
INPUT_ERRORS = (ConfigError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError,
                UnicodeDecodeError, ValueError)

_debug = False


def set_debug(on: bool = True) -> None:
    """`--debug`: print the full traceback of every error (off: one line each)."""
    global _debug
    _debug = _debug or bool(on)


def debug_enabled() -> bool:
    return _debug


def fail(prog: str, exc: BaseException | str, code: int = EXIT_BAD_INPUT, prefix: str = "",
         expected: bool = False) -> int:
    """Report an error as one line on stderr (after the traceback, under --debug); returns the exit code.
    `expected`: the exception's message is written for users (TrainingError), so its type is not shown."""
    if _debug and isinstance(exc, BaseException):
        traceback.print_exception(exc)
    text = exc if isinstance(exc, str) else " ".join(str(exc).split()) if expected else one_line(exc)
    print(f"{prog}: {prefix}{text}", file=sys.stderr)
    return code


def one_line(exc: BaseException) -> str:
    """An exception as one line: input errors by their message, anything else with its type."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, (ValueError, OSError)):
        return text
    return f"{type(exc).__name__}: {text}" + ("" if _debug else " (rerun with --debug for the traceback)")


class Parser(argparse.ArgumentParser):
    """argparse with `--debug` on every command and one-line usage errors (exit 2)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_argument("--debug", action="store_true", help="on an error, print the full traceback")

    def error(self, message: str):  # noqa: D401 - argparse's hook
        print(f"{self.prog}: {message} (`{self.prog} -h` for usage)", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)

    def parse_intermixed_args(self, *args, **kwargs):
        a = super().parse_intermixed_args(*args, **kwargs)
        set_debug(a.debug)
        return a

    def parse_args(self, *args, **kwargs):
        a = super().parse_args(*args, **kwargs)
        set_debug(a.debug)
        return a


def int_at_least(low: int):
    """An argparse type: an integer >= `low`, with a message naming the bound."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def _commands() -> dict:
    return {ep.name: ep for ep in entry_points(group="mmgrpo.commands")}


def help_config(config: str | None, overrides: list[str]) -> str:
    """The `--help-config` text: every settable key with type, default, valid range and doc."""
    from .config import apply_overrides, describe_config, format_reference, load_yaml

    data = apply_overrides(load_yaml(config), list(overrides)) if config else None
    head = (f"Config keys of {config} (set in the YAML or as key=value; `valid` is the declared range):" if config
            else "TrainConfig keys (give a config file to also list its policy's, rewards' and methods' keys):")
    rows = describe_config(data)
    from .schema import FieldInfo

    rows = [FieldInfo("key", "type", "default", "valid", "doc"), *rows]
    return head + "\n" + format_reference(rows)


def cmd_train(argv: list[str]) -> int:
    prog = "mmgrpo train"
    p = Parser(prog=prog, description="Train a GRPO recipe from a YAML config.",
               epilog="exit codes: 0 done, 1 the run failed, 2 bad input (config, arguments, files)")
    p.add_argument("config", nargs="?", help="YAML recipe: a path (see configs/) or pkg://mmgrpo.configs/...")
    p.add_argument("overrides", nargs="*", help="key.path=value overrides, e.g. optim.lr=1e-4 steps=50")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in run_dir")
    p.add_argument("--help-config", action="store_true",
                   help="print every config key (with the config's policy and rewards) with its doc and valid range")
    a = p.parse_intermixed_args(argv)
    if a.help_config:
        try:
            print(help_config(a.config, a.overrides))
        except INPUT_ERRORS as exc:
            return fail(prog, exc)
        return 0
    if a.config is None:
        p.error("the following arguments are required: config")
    from .config import load_config
    from .trainer import Trainer, TrainingError

    try:
        cfg = load_config(a.config, a.overrides)
        trainer = Trainer(cfg)
    except INPUT_ERRORS as exc:
        return fail(prog, exc, prefix="config error: ")
    try:
        summary = trainer.fit(resume=a.resume)
    except TrainingError as exc:
        return fail(prog, exc, EXIT_FAILED, expected=True)
    except Exception as exc:  # noqa: BLE001 - a failed run: one line, exit 1
        return fail(prog, exc, EXIT_FAILED, prefix="run failed: ")
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
    p = Parser(prog="mmgrpo list", description="Every registered method and component.")
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
        return fail("mmgrpo list", f"unknown kind {a.kind!r}; choose one of {', '.join(regs)}")
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
    p = Parser(prog="mmgrpo plot", description="Draw reward and KL curves of a run to PNG.")
    p.add_argument("run_dir")
    p.add_argument("--out", default=None, help="PNG path (default RUN_DIR/curves.png)")
    a = p.parse_args(argv)
    from .plot import plot_run

    try:
        out = plot_run(a.run_dir, a.out)
    except INPUT_ERRORS as exc:
        return fail("mmgrpo plot", exc)
    print(out)
    return 0


def check_lora(path: str) -> None:
    """`--lora`: a directory or `.safetensors` file whose safetensors files all open (else a ConfigError)."""
    from safetensors import safe_open

    right = "give a directory or .safetensors file written by save_pretrained (e.g. a demo run's lora/)"
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"--lora {path!r} does not exist; {right}")
    files = sorted(p.glob("*.safetensors")) if p.is_dir() else [p]
    if not files:
        raise ConfigError(f"--lora {path!r} holds no .safetensors file; {right}")
    for f in files:
        if f.suffix != ".safetensors":
            raise ConfigError(f"--lora {str(f)!r} is not a .safetensors file; {right}")
        if f.stat().st_size == 0:
            raise ConfigError(f"--lora {str(f)!r} is empty (0 bytes); {right}")
        try:
            with safe_open(str(f), framework="pt") as handle:
                handle.keys()
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
            raise ConfigError(f"--lora {str(f)!r} is not a readable safetensors file "
                              f"({' '.join(str(exc).split())}); {right}") from None


def _policy_overrides(a) -> list[str]:
    out = list(a.overrides)
    if getattr(a, "lora", None):
        check_lora(a.lora)
        out.append(f"policy.lora_path={a.lora}")
    return out


def _trainer_for(a, extra: list[str]):
    from .config import load_config
    from .trainer import Trainer

    cfg = load_config(a.config, _policy_overrides(a) + extra)
    return cfg, Trainer(cfg)


def cmd_eval(argv: list[str]) -> int:
    prog = "mmgrpo eval"
    p = Parser(prog=prog, description="Held-out rewards of a recipe's policy with fixed seeds (the same prompts "
               "and seeds every time), as JSON.", epilog="exit codes: 0 done, 1 the run failed, 2 bad input")
    p.add_argument("config", help="YAML recipe: a path or pkg://mmgrpo.configs/...")
    p.add_argument("overrides", nargs="*", help="key.path=value overrides")
    p.add_argument("--lora", help="adapter weights to load (sets policy.lora_path)")
    p.add_argument("--samples", type=int_at_least(1), default=None,
                   help="samples per held-out prompt (eval_group_size), >= 1")
    p.add_argument("--save", default=None, help="also write the samples (grid / audio / text) to this prefix")
    a = p.parse_intermixed_args(argv)
    import json

    extra = [f"eval_group_size={a.samples}"] if a.samples is not None else []
    try:
        cfg, trainer = _trainer_for(a, extra)
    except INPUT_ERRORS as exc:
        return fail(prog, exc)
    if not trainer.eval_prompts:
        return fail(prog, "the config has no held-out prompts; set data.eval_prompts or data.eval_prompts_file")
    try:
        metrics = trainer.evaluate(save_prefix=Path(a.save) if a.save else None)
    except Exception as exc:  # noqa: BLE001 - a failed run: one line, exit 1
        return fail(prog, exc, EXIT_FAILED, prefix="evaluation failed: ")
    print(json.dumps({"config": a.config, "lora": a.lora, "prompts": len(trainer.eval_prompts),
                      "samples_per_prompt": cfg.eval_group_size, **metrics}, indent=2))
    return 0


def cmd_sample(argv: list[str]) -> int:
    prog = "mmgrpo sample"
    p = Parser(prog=prog, description="Sample a recipe's policy for given prompts and write the outputs (image "
               "grid / audio / text) with their rewards.", epilog="exit codes: 0 done, 1 the run failed, 2 bad input")
    p.add_argument("config", help="YAML recipe: a path or pkg://mmgrpo.configs/...")
    p.add_argument("overrides", nargs="*", help="key.path=value overrides")
    p.add_argument("--prompt", action="append", required=True, help="a prompt (repeat for several)")
    p.add_argument("--lora", help="adapter weights to load (sets policy.lora_path)")
    p.add_argument("--num", type=int_at_least(1), default=4, help="samples per prompt, >= 1")
    p.add_argument("--seed", type=int_at_least(0), default=0, help="seed of the samples, >= 0")
    p.add_argument("--out", default="samples/sample", help="output prefix (default samples/sample)")
    a = p.parse_intermixed_args(argv)

    try:
        _, trainer = _trainer_for(a, [])
    except INPUT_ERRORS as exc:
        return fail(prog, exc)
    import torch

    from .groups import fixed_eval_batch

    out = Path(a.out)
    try:
        batch = fixed_eval_batch(a.prompt, a.num, a.seed)
        trainer.policy.eval()
        with torch.no_grad():
            rollout = trainer.policy.sample(batch, evaluate=True)
        raw = trainer.score(rollout)
        trainer.policy.save_samples(out, rollout, raw.nan_to_num(0).sum(1))
    except Exception as exc:  # noqa: BLE001 - a failed run: one line, exit 1
        return fail(prog, exc, EXIT_FAILED, prefix="sampling failed: ")
    for prompt in a.prompt:
        rows = [i for i, c in enumerate(rollout.conds) if c == prompt]
        scores = ", ".join(f"{n}={raw[rows, k].nanmean().item():.3f}" for k, (n, _, _) in enumerate(trainer.rewards))
        print(f"{prompt!r}: {scores}")
    print(f"wrote {', '.join(str(p) for p in sorted(out.parent.glob(out.name + '*')))}")
    return 0


BUILTIN = {"train": cmd_train, "eval": cmd_eval, "sample": cmd_sample, "list": cmd_list, "plot": cmd_plot}


def main(argv: list[str] | None = None) -> int:
    """`mmgrpo COMMAND ...`: every expected failure is one line on stderr, exit 1 (run failed) or 2 (bad
    input); `--debug` anywhere (before a `--`) prints full tracebacks instead."""
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    if "--debug" in argv[:cut]:
        set_debug(True)
        argv = [x for x in argv[:cut] if x != "--debug"] + argv[cut:]
    extra = _commands()
    names = [*BUILTIN, *sorted(extra)]
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: mmgrpo COMMAND [args] [--debug]\n\ncommands: " + ", ".join(names) +
              "\n\nstart with `mmgrpo demo` (text-to-image GRPO on the built-in shapes world),"
              "\nor `mmgrpo train configs/<family>/<recipe>.yaml`; `mmgrpo COMMAND -h` for details."
              "\nexit codes: 0 done, 1 the run failed, 2 bad input; --debug prints full tracebacks.")
        return 0
    cmd, rest = argv[0], argv[1:]
    prog = f"mmgrpo {cmd}"
    try:
        if cmd in BUILTIN:
            return int(BUILTIN[cmd](rest) or 0)
        if cmd in extra:
            try:
                command = extra[cmd].load()
            except Exception as exc:  # noqa: BLE001
                return fail(prog, exc, EXIT_FAILED, prefix=f"cannot load the command ({extra[cmd].value}): ")
            return int(command(rest) or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except SystemExit as exc:                     # argparse: -h (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else fail(prog, str(exc.code)))
    except INPUT_ERRORS as exc:
        if _debug:
            raise
        return fail(prog, exc)
    except Exception as exc:  # noqa: BLE001 - the last net: one line, unless --debug
        if _debug:
            raise
        return fail(prog, exc, EXIT_FAILED, prefix="failed: ")
    return fail("mmgrpo", f"unknown command {cmd!r}; valid commands: {', '.join(names)}")


if __name__ == "__main__":
    sys.exit(main())
