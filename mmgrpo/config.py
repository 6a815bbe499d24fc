"""Configs: nested dataclasses are the only schema, loaded from YAML with `key=value` overrides.

Every field carries a one-line doc comment. Loading fails before any work starts on an unknown key, a
wrong type or an invalid value, naming the dotted key and the valid choices. Adapters and rewards are
given as `{name: <registered name>, ...params}` or `{_component_: "mmgrpo....:Class", ...params}`, and
their params are checked against the component's own `Config` dataclass.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml


class ConfigError(ValueError):
    """A config value is wrong; the message names the dotted key and what would be right."""


# ----------------------------------------------------------------------------- schema → instance

def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """Check `value` against the annotation `tp` (recursively), returning the converted value."""
    if tp is Any or tp is object:
        return value
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{where}: must not be null (expected {_type_name(tp)})")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of {_type_name(tp)}")
    if origin is Literal:
        choices = get_args(tp)
        if isinstance(value, bool) and all(isinstance(c, str) for c in choices):
            # YAML 1.1 reads `no` / `off` as false: map it back to the string choice that was meant
            spelled = [c for c in (("no", "off", "false") if not value else ("yes", "on", "true")) if c in choices]
            value = spelled[0] if spelled else value
        if value not in choices:
            raise ConfigError(f"{where}: {value!r} is not valid; choose one of {list(choices)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        args = get_args(tp)
        item_tp = args[0] if args else Any
        out = [_coerce(item_tp, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        return dict(value)
    if is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {type(value).__name__} {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {type(value).__name__} {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {type(value).__name__} {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {type(value).__name__} {value!r}")
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def from_dict(cls: type, data: dict, where: str = "") -> Any:
    """Build dataclass `cls` from `data`, checking keys and types; `where` prefixes error keys."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls) if f.init}
    unknown = sorted(set(data) - set(known))
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ConfigError(f"unknown config key {key!r}; valid keys here: {', '.join(sorted(known))}")
    kwargs = {}
    for name, value in data.items():
        key = f"{where}.{name}" if where else name
        kwargs[name] = _coerce(hints[name], value, key)
    missing = [n for n, f in known.items() if n not in kwargs and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        key = f"{where}.{missing[0]}" if where else missing[0]
        raise ConfigError(f"missing required config key {key!r}")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{where or cls.__name__}: {exc}") from exc


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain dict/list structure (for saving the resolved config)."""
    if is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def field_docs(cls: type) -> dict[str, str]:
    """The one-line `# comment` after each field in the class source (shown by `mmgrpo train --help-config`)."""
    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        return {}
    docs = {}
    for line in lines:
        stripped = line.strip()
        if ":" in stripped and "#" in stripped and not stripped.startswith("#"):
            name = stripped.split(":", 1)[0].strip()
            if name.isidentifier():
                docs[name] = stripped.split("#", 1)[1].strip()
    return docs


# ----------------------------------------------------------------------------- YAML + overrides

class _Loader(yaml.SafeLoader):
    """SafeLoader that reads YAML 1.2 floats: `1e-4` is a float (YAML 1.1, PyYAML's default, wants `1.0e-4`
    and would hand the trainer the string '1e-4')."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a","b","c"], yaml-parsed value)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.path=value")
    key, raw = text.split("=", 1)
    if not key or any(not p for p in key.split(".")):
        raise ConfigError(f"override {text!r}: empty key")
    try:
        value = _yaml_load(raw) if raw != "" else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc})") from exc
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Set dotted keys in a nested dict; list items are addressed by index (rewards.0.weight=2)."""
    for text in overrides:
        path, value = parse_override(text)
        node: Any = data
        for i, part in enumerate(path[:-1]):
            where = ".".join(path[: i + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"override {text!r}: {where!r} is not a valid list index")
                node = node[int(part)]
            else:
                node = node.setdefault(part, {})
            if not isinstance(node, (dict, list)):
                raise ConfigError(f"override {text!r}: {where!r} is not a mapping")
        last = path[-1]
        if isinstance(node, list):
            if not last.isdigit() or int(last) >= len(node):
                raise ConfigError(f"override {text!r}: {last!r} is not a valid list index")
            node[int(last)] = value
        else:
            node[last] = value
    return data


def load_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        data = _yaml_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(p)!r} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a mapping at the top level")
    return data


# ----------------------------------------------------------------------------- the training schema

@dataclass
class DataConfig:
    prompts: list = field(default_factory=list)  # inline training prompts/conditions (strings or mappings)
    prompts_file: str | None = None  # text file, one prompt per line (or .jsonl, one JSON value per line)
    eval_prompts: list = field(default_factory=list)  # inline held-out prompts for evaluation
    eval_prompts_file: str | None = None  # held-out prompt file, same formats as prompts_file
    group_size: int = 8  # G: samples per prompt; advantages are relative within a group

    def __post_init__(self) -> None:
        if self.group_size < 1:
            raise ConfigError(f"data.group_size must be >= 1, got {self.group_size}")


@dataclass
class AdvantageConfig:
    name: str = "grpo"  # advantage estimator (mmgrpo list advantages)
    params: dict = field(default_factory=dict)  # keyword params of the estimator (e.g. eps)
    clip: float | None = None  # clamp advantages to [-clip, clip] (Flow-GRPO: 5); null = off
    zero_std: Literal["mask", "keep"] = "mask"  # groups with identical rewards: mask their positions or keep
    reward_mode: Literal["weighted_sum", "normalize_then_sum"] = "weighted_sum"  # how several rewards combine


@dataclass
class LossConfig:
    objective: str = "clip"  # per-position objective (mmgrpo list objectives)
    objective_params: dict = field(default_factory=dict)  # e.g. {eps_low: 0.2, eps_high: 0.28}
    aggregation: str = "seq_mean"  # how per-position losses become one scalar (mmgrpo list aggregation)
    aggregation_params: dict = field(default_factory=dict)  # e.g. {max_len: 512} for dr_grpo
    kl_beta: float = 0.0  # weight of the KL to the reference policy; 0 = no reference needed
    kl_estimator: str = "k3"  # k1, k2 or k3; ignored when the adapter supplies its own reference_kl
    kl_in_reward: bool = False  # subtract beta * sequence KL from the reward instead of adding it to the loss


@dataclass
class OptimConfig:
    lr: float = 1e-4  # peak learning rate (AdamW)
    weight_decay: float = 0.0  # AdamW weight decay
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # AdamW betas
    eps: float = 1e-8  # AdamW epsilon
    grad_clip: float | None = 1.0  # clip the global grad norm to this; null = off
    schedule: Literal["constant", "linear", "cosine"] = "constant"  # LR schedule after warmup
    warmup_steps: int = 0  # linear warmup, in optimizer steps
    ema_decay: float | None = None  # keep an EMA of trainable weights (used for evaluation); null = off

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"optim.lr must be > 0, got {self.lr}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ConfigError(f"optim.ema_decay must be in (0, 1), got {self.ema_decay}")


@dataclass
class TrainConfig:
    policy: dict = field(default_factory=dict)  # the adapter: {name: ..., **its Config fields}
    rewards: list[dict] = field(default_factory=list)  # [{name: ..., weight: 1.0, label: metric name, **params}]
    data: DataConfig = field(default_factory=DataConfig)  # prompts and group size
    advantage: AdvantageConfig = field(default_factory=AdvantageConfig)  # advantage estimation
    loss: LossConfig = field(default_factory=LossConfig)  # objective, aggregation, KL
    optim: OptimConfig = field(default_factory=OptimConfig)  # optimizer, schedule, EMA
    sampling: dict = field(default_factory=lambda: {"name": "single"})  # collector: {name: single, **params}
    seed: int = 0  # run seed: samples, minibatch order and init derive from it
    steps: int = 100  # training steps (one rollout batch each)
    batch_size: int = 32  # samples per step over all ranks (groups per step = batch_size / group_size)
    micro_batch_size: int | None = None  # samples per forward/backward on each rank; null = all local
    grad_accum: int = 1  # micro-batches per optimizer step
    inner_epochs: int = 1  # passes over each rollout batch (mu)
    shuffle_minibatches: bool = False  # shuffle sample order before cutting minibatches (seeded)
    run_dir: str = "runs/default"  # where metrics, samples, checkpoints and plots go
    overwrite: bool = False  # a fresh run may replace an earlier run's checkpoints in run_dir
    log_every: int = 1  # write metrics every k steps
    sample_every: int = 10  # save sample outputs every k steps (0 = never)
    checkpoint_every: int = 50  # checkpoint every k steps (0 = only at the end)
    keep_checkpoints: int = 2  # how many recent checkpoints to keep
    eval_every: int = 0  # evaluate on held-out prompts every k steps (0 = only at start and end if any)
    eval_group_size: int = 1  # samples per held-out prompt in evaluation
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"  # autocast for the policy's forward passes
    progress: bool = True  # show a progress bar
    tensorboard: bool = True  # write TensorBoard events next to metrics.jsonl (false drops it from `trackers`)
    trackers: list[str] = field(default_factory=lambda: ["tensorboard"])  # accelerate trackers: tensorboard, wandb, mlflow

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "grad_accum", "inner_epochs", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.micro_batch_size is not None and self.micro_batch_size < 1:
            raise ConfigError(f"micro_batch_size must be >= 1, got {self.micro_batch_size}")
        g = self.data.group_size
        if g > self.batch_size:
            raise ConfigError(
                f"data.group_size={g} is larger than batch_size={self.batch_size}: a step must hold at "
                "least one whole group; raise batch_size or lower data.group_size"
            )
        if self.batch_size % g:
            raise ConfigError(f"batch_size={self.batch_size} must be a multiple of data.group_size={g}")


def _check_params(entry: Any, params: dict, where: str) -> None:
    """Params of a registered method must be among those its registry entry lists (read once at registration)."""
    valid = list(entry.params or ())
    for k in params:
        if k not in valid:
            raise ConfigError(f"unknown parameter {where}.{k}; valid parameters: {', '.join(valid) or '(none)'}")


def split_reward_spec(spec: dict, where: str) -> tuple[float, str | None, dict]:
    """A `rewards` entry -> (weight, label, the component spec without them), checking both fields."""
    spec = dict(spec)
    weight, label = spec.pop("weight", 1.0), spec.pop("label", None)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        raise ConfigError(f"{where}.weight: expected a number, got {weight!r}")
    if label is not None and not isinstance(label, str):
        raise ConfigError(f"{where}.label: expected a string, got {label!r}")
    return float(weight), label, spec


def _check_fields(cfg: TrainConfig, policy_factory: Any) -> None:
    """A method that requires an optional rollout field must be paired with a policy that provides it."""
    from . import advantages, aggregation, objectives
    from .inputs import ROLLOUT_FIELDS

    provides = set(getattr(policy_factory, "provides", ()))
    name = cfg.policy.get("name") or cfg.policy.get("_component_")
    for where, entry in (("advantage.name", advantages.ADVANTAGES.entry(cfg.advantage.name)),
                         ("loss.objective", objectives.OBJECTIVES.entry(cfg.loss.objective)),
                         ("loss.aggregation", aggregation.AGGREGATIONS.entry(cfg.loss.aggregation))):
        missing = sorted(set(entry.requires) & set(ROLLOUT_FIELDS) - provides)
        if missing:
            raise ConfigError(
                f"{where}: needs the rollout field {missing[0]!r}, which policy {name!r} does not provide "
                f"(it provides: {', '.join(sorted(provides)) or 'none'}); choose another method or policy")
    obj = objectives.OBJECTIVES.get(cfg.loss.objective)
    if getattr(obj, "consumes", "log_prob") == "forward_process":
        from .policy import PolicyBase

        if getattr(policy_factory, "forward_process", PolicyBase.forward_process) is PolicyBase.forward_process:
            raise ConfigError(f"loss.objective: {cfg.loss.objective!r} regresses on the forward process, which policy "
                              f"{name!r} does not implement (forward_process); choose a likelihood-ratio objective")


def validate(cfg: TrainConfig) -> TrainConfig:
    """Resolve every registry name and component so that errors surface before any work starts."""
    from . import advantages, aggregation, components, kl, objectives

    def check(registry_get, names, value, where):
        try:
            return registry_get(value)
        except KeyError:
            raise ConfigError(f"{where}: unknown name {value!r}; valid names: {', '.join(names())}") from None

    estimator = check(advantages.get, advantages.names, cfg.advantage.name, "advantage.name")
    _check_params(advantages.ADVANTAGES.entry(cfg.advantage.name), cfg.advantage.params, "advantage.params")
    if getattr(estimator, "needs_zero_std_keep", False) and cfg.advantage.zero_std == "mask":
        raise ConfigError(f"advantage.zero_std: {cfg.advantage.name!r} gives groups with identical rewards a learning "
                          "signal, which zero_std=mask would discard; set advantage.zero_std: keep")
    check(objectives.get, objectives.names, cfg.loss.objective, "loss.objective")
    _check_params(objectives.OBJECTIVES.entry(cfg.loss.objective), cfg.loss.objective_params, "loss.objective_params")
    check(aggregation.get, aggregation.names, cfg.loss.aggregation, "loss.aggregation")
    _check_params(aggregation.AGGREGATIONS.entry(cfg.loss.aggregation), cfg.loss.aggregation_params,
                  "loss.aggregation_params")
    check(kl.get, kl.names, cfg.loss.kl_estimator, "loss.kl_estimator")
    from . import collect

    sampling = dict(cfg.sampling)
    if "name" not in sampling:
        raise ConfigError(f"sampling: give a collector name (one of: {', '.join(collect.names())})")
    cname = sampling.pop("name")
    collector = check(collect.get, collect.names, cname, "sampling.name")
    _check_params(collect.COLLECTORS.entry(cname), sampling, "sampling")
    if not cfg.policy:
        raise ConfigError(f"policy: missing; give {{name: ...}} (one of: {', '.join(components.POLICIES.names())})")
    if not cfg.rewards:
        raise ConfigError(f"rewards: give at least one reward (one of: {', '.join(components.REWARDS.names())})")
    try:
        factory, params = components.resolve(components.POLICIES, cfg.policy, "policy")
        components.component_config(factory, params, "policy")
        _check_fields(cfg, factory)
        for hook in getattr(collector, "policy_hooks", ()):
            if not callable(getattr(factory, hook, None)):
                raise ConfigError(f"sampling.name: {cfg.sampling['name']!r} calls the policy method {hook!r}, which "
                                  f"policy {cfg.policy.get('name') or cfg.policy.get('_component_')!r} does not have")
        for i, spec in enumerate(cfg.rewards):
            _, _, spec = split_reward_spec(spec, f"rewards[{i}]")
            factory, params = components.resolve(components.REWARDS, spec, f"rewards[{i}]")
            components.component_config(factory, params, f"rewards[{i}]")
    except ConfigError:
        raise
    except (ValueError, ImportError) as exc:
        raise ConfigError(str(exc)) from exc
    return cfg


def load_config(path: str | Path | None, overrides: list[str] | None = None, base: dict | None = None) -> TrainConfig:
    """YAML file (or `base` dict) + `key=value` overrides -> validated TrainConfig.

    Relative prompt files are resolved against the config file's folder.
    """
    data = load_yaml(path) if path is not None else dict(base or {})
    data = apply_overrides(data, list(overrides or []))
    cfg = from_dict(TrainConfig, data)
    if path is not None:
        root = Path(path).resolve().parent
        for attr in ("prompts_file", "eval_prompts_file"):
            value = getattr(cfg.data, attr)
            if value and "://" not in value and not Path(value).is_absolute() and (root / value).exists():
                setattr(cfg.data, attr, str(root / value))
    return validate(cfg)
