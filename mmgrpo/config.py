"""Configs: nested dataclasses are the only schema, loaded from YAML with `key=value` overrides.

Every field carries a one-line doc comment, and every numeric field its valid range, declared with it
(`bounded(...)`, see `schema.py`). Loading fails before any work starts on an unknown key, a wrong type,
a value out of range or not finite, a YAML alias or an unreadable prompt file, naming the dotted key (or
the file) and what would be right. Adapters and rewards are given as `{name: <registered name>, ...params}`
or `{_component_: "mmgrpo....:Class", ...params}` (see `components.py`), and their params are checked
against the component's own `Config` dataclass. `describe_config` is what `mmgrpo train --help-config`
prints and `docs/config.md` shows.
"""

from __future__ import annotations

import importlib.resources
import math
import re
from dataclasses import dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from . import components
from .schema import (
    ConfigError,
    FieldInfo,
    bounded,
    check_fields,
    describe_fields,
    field_docs,
    from_dict,
    to_dict,
)

__all__ = ["ConfigError", "TrainConfig", "bounded", "field_docs", "from_dict", "load_config", "load_yaml",
           "resolve_data_path", "to_dict", "validate"]


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


def _refuse_aliases(self: _Loader, parent: Any, index: Any) -> Any:
    # An alias (*name) repeats a node by reference: six levels of them in 1 KB expand to millions of
    # nodes. Configs are small and written out, so the first alias stops the parse, before any expansion.
    if self.check_event(yaml.AliasEvent):
        event = self.peek_event()
        raise ConfigError(f"line {event.start_mark.line + 1}: YAML alias *{event.anchor} is not accepted in a "
                          "config (aliases can expand exponentially); write the value out instead")
    return yaml.SafeLoader.compose_node(self, parent, index)


_Loader.compose_node = _refuse_aliases  # type: ignore[method-assign]

MAX_CONFIG_BYTES = 16 << 20   # a config or override larger than this is refused unread


def _yaml_load(text: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise ConfigError("YAML nested too deeply to be a config") from None


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
    except ConfigError as exc:
        raise ConfigError(f"override {text!r}: {exc}") from None
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


def resolve_data_path(path: str | Path) -> Path:
    """A local path, or `pkg://package.name/file` for a file shipped inside an installed package."""
    text = str(path)
    if text.startswith("pkg://"):
        pkg, _, rel = text[len("pkg://"):].partition("/")
        if not pkg or not rel or not all(p.isidentifier() for p in pkg.split(".")):
            raise ConfigError(f"{text!r}: a package path looks like pkg://package.name/relative/file")
        try:
            return Path(str(importlib.resources.files(pkg) / rel))
        except ModuleNotFoundError as exc:
            raise ConfigError(f"{text!r}: package {pkg!r} is not installed") from exc
    return Path(path)


def read_text_file(p: Path, what: str) -> str:
    """The UTF-8 text of `p`, or a ConfigError naming `what` and the file."""
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {str(p)!r} is not UTF-8 text (byte {exc.start} is {exc.object[exc.start]:#04x}); "
                          "save it as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{what} {str(p)!r} cannot be read: {exc.strerror or exc}") from None


def load_yaml(path: str | Path) -> dict:
    """A YAML config file (local or `pkg://`) as a mapping; no aliases, UTF-8, at most 16 MiB."""
    p = resolve_data_path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist" +
                          (f" (looked for {str(p)!r})" if str(p) != str(path) else ""))
    if p.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {str(p)!r} is {p.stat().st_size} bytes; a config holds at most "
                          f"{MAX_CONFIG_BYTES} (put long prompt lists in data.prompts_file)")
    try:
        data = _yaml_load(read_text_file(p, "config file")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(p)!r} is not valid YAML: {exc}") from exc
    except ConfigError as exc:
        if str(exc).startswith("config file"):
            raise
        raise ConfigError(f"config file {str(p)!r}, {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a mapping at the top level")
    return data


def load_prompts(inline: list, path: str | None, where: str) -> list:
    """Prompts from an inline list and/or a file (.txt: one per line; .jsonl: one JSON value per line)."""
    import json

    prompts = list(inline)
    if path:
        p = resolve_data_path(path)
        if not p.is_file():
            raise ConfigError(f"{where}: prompt file {str(p)!r} does not exist")
        lines = [ln for ln in read_text_file(p, f"{where}: prompt file").splitlines() if ln.strip()]
        if p.suffix == ".jsonl":
            for i, ln in enumerate(lines):
                try:
                    prompts.append(json.loads(ln))
                except (json.JSONDecodeError, RecursionError) as exc:
                    raise ConfigError(f"{where}: {str(p)!r} line {i + 1} is not valid JSON: {exc}") from None
        else:
            prompts += [ln.strip() for ln in lines]
    return prompts


# ----------------------------------------------------------------------------- the training schema

SEED_LIMIT = 1 << 63     # seeds are mixed into 63-bit derived seeds (groups.derive_seed)


@dataclass
class DataConfig:
    prompts: list = field(default_factory=list)  # inline training prompts/conditions (strings or mappings)
    prompts_file: str | None = None  # text file, one prompt per line (or .jsonl, one JSON value per line)
    eval_prompts: list = field(default_factory=list)  # inline held-out prompts for evaluation
    eval_prompts_file: str | None = None  # held-out prompt file, same formats as prompts_file
    group_size: int = bounded(8, ge=1)  # G: samples per prompt; advantages are relative within a group

    def __post_init__(self) -> None:
        check_fields(self, "data")


@dataclass
class AdvantageConfig:
    name: str = "grpo"  # advantage estimator (mmgrpo list advantages)
    params: dict = field(default_factory=dict)  # keyword params of the estimator (e.g. eps)
    clip: float | None = bounded(None, gt=0)  # clamp advantages to [-clip, clip] (Flow-GRPO: 5); null = off
    zero_std: Literal["mask", "keep"] = "mask"  # groups with identical rewards: mask their positions or keep
    reward_mode: Literal["weighted_sum", "normalize_then_sum"] = "weighted_sum"  # how several rewards combine

    def __post_init__(self) -> None:
        check_fields(self, "advantage")


@dataclass
class LossConfig:
    objective: str = "clip"  # per-position objective (mmgrpo list objectives)
    objective_params: dict = field(default_factory=dict)  # e.g. {eps_low: 0.2, eps_high: 0.28}
    aggregation: str = "seq_mean"  # how per-position losses become one scalar (mmgrpo list aggregation)
    aggregation_params: dict = field(default_factory=dict)  # e.g. {max_len: 512} for dr_grpo
    kl_beta: float = bounded(0.0, ge=0)  # weight of the KL to the reference policy; 0 = no reference needed
    kl_estimator: str = "k3"  # k1, k2 or k3; ignored when the adapter supplies its own reference_kl
    kl_in_reward: bool = False  # subtract beta * sequence KL from the reward instead of adding it to the loss

    def __post_init__(self) -> None:
        check_fields(self, "loss")


@dataclass
class OptimConfig:
    lr: float = bounded(1e-4, gt=0)  # peak learning rate (AdamW)
    weight_decay: float = bounded(0.0, ge=0)  # AdamW weight decay
    betas: list[float] = bounded(default_factory=lambda: [0.9, 0.999], ge=0, lt=1)  # AdamW betas (beta1, beta2)
    eps: float = bounded(1e-8, gt=0)  # AdamW epsilon
    grad_clip: float | None = bounded(1.0, gt=0)  # clip the global grad norm to this; null = off
    schedule: Literal["constant", "linear", "cosine"] = "constant"  # LR schedule after warmup
    warmup_steps: int = bounded(0, ge=0)  # linear warmup, in optimizer steps
    ema_decay: float | None = bounded(None, gt=0, lt=1)  # keep an EMA of trainable weights (used for evaluation); null = off

    def __post_init__(self) -> None:
        check_fields(self, "optim")
        if len(self.betas) != 2:
            raise ConfigError(f"optim.betas: give two numbers [beta1, beta2], got {self.betas!r}")


@dataclass
class TrainConfig:
    policy: dict = field(default_factory=dict)  # the adapter: {name: ..., **its Config fields}
    rewards: list[dict] = field(default_factory=list)  # [{name: ..., weight: 1.0, label: metric name, **params}]
    data: DataConfig = field(default_factory=DataConfig)  # prompts and group size
    advantage: AdvantageConfig = field(default_factory=AdvantageConfig)  # advantage estimation
    loss: LossConfig = field(default_factory=LossConfig)  # objective, aggregation, KL
    optim: OptimConfig = field(default_factory=OptimConfig)  # optimizer, schedule, EMA
    sampling: dict = field(default_factory=lambda: {"name": "single"})  # collector: {name: single, **params}
    seed: int = bounded(0, ge=0, lt=SEED_LIMIT)  # run seed: samples, minibatch order and init derive from it
    steps: int = bounded(100, ge=1)  # training steps (one rollout batch each)
    batch_size: int = bounded(32, ge=1)  # samples per step over all ranks (groups per step = batch_size / group_size)
    micro_batch_size: int | None = bounded(None, ge=1)  # samples per forward/backward on each rank; null = all local
    grad_accum: int = bounded(1, ge=1)  # micro-batches per optimizer step
    inner_epochs: int = bounded(1, ge=1)  # passes over each rollout batch (mu)
    shuffle_minibatches: bool = False  # shuffle sample order before cutting minibatches (seeded)
    run_dir: str = "runs/default"  # where metrics, samples, checkpoints and plots go
    overwrite: bool = False  # a fresh run may replace an earlier run's checkpoints in run_dir
    log_every: int = bounded(1, ge=1)  # write metrics every k steps
    sample_every: int = bounded(10, ge=0)  # save sample outputs every k steps (0 = never)
    checkpoint_every: int = bounded(50, ge=0)  # checkpoint every k steps (0 = only at the end)
    keep_checkpoints: int = bounded(2, ge=1)  # how many recent checkpoints to keep
    eval_every: int = bounded(0, ge=0)  # evaluate on held-out prompts every k steps (0 = only at start and end if any)
    eval_group_size: int = bounded(1, ge=1)  # samples per held-out prompt in evaluation
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"  # autocast for the policy's forward passes
    progress: bool = True  # show a progress bar
    tensorboard: bool = True  # write TensorBoard events next to metrics.jsonl (false drops it from `trackers`)
    trackers: list[str] = field(default_factory=lambda: ["tensorboard"])  # accelerate trackers: tensorboard, wandb, mlflow

    def __post_init__(self) -> None:
        check_fields(self)
        g = self.data.group_size
        if g > self.batch_size:
            raise ConfigError(
                f"data.group_size={g} is larger than batch_size={self.batch_size}: a step must hold at "
                "least one whole group; raise batch_size or lower data.group_size"
            )
        if self.batch_size % g:
            raise ConfigError(f"batch_size={self.batch_size} must be a multiple of data.group_size={g}")


def _check_finite_params(params: dict, where: str) -> None:
    """Free-form method parameters (estimator, objective, collector) hold no NaN or infinity."""
    for k, v in params.items():
        for i, item in enumerate(v if isinstance(v, (list, tuple)) else [v]):
            if isinstance(item, float) and not math.isfinite(item):
                sub = f"[{i}]" if isinstance(v, (list, tuple)) else ""
                raise ConfigError(f"{where}.{k}{sub}: {item!r} is not a finite number")


def _check_params(entry: Any, params: dict, where: str) -> None:
    """Params of a registered method must be among those its registry entry lists (read once at registration)."""
    valid = list(entry.params or ())
    _check_finite_params(params, where)
    for k in params:
        if k not in valid:
            raise ConfigError(f"unknown parameter {where}.{k}; valid parameters: {', '.join(valid) or '(none)'}")


def split_reward_spec(spec: dict, where: str) -> tuple[float, str | None, dict]:
    """A `rewards` entry -> (weight, label, the component spec without them), checking both fields."""
    spec = dict(spec)
    weight, label = spec.pop("weight", 1.0), spec.pop("label", None)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        raise ConfigError(f"{where}.weight: expected a number, got {weight!r}")
    try:
        finite = math.isfinite(weight)
    except OverflowError:
        finite = False
    if not finite:
        raise ConfigError(f"{where}.weight: {weight!r} is out of range; valid: a finite number (the reward's "
                          "weight in the sum; 0 = reported only)")
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
    from . import advantages, aggregation, kl, objectives

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
    """YAML file (local or `pkg://`, or a `base` dict) + `key=value` overrides -> validated TrainConfig.

    Relative prompt files are resolved against the config file's folder; prompt files are read once here,
    so that a missing or unreadable one fails before any work starts.
    """
    data = load_yaml(path) if path is not None else dict(base or {})
    data = apply_overrides(data, list(overrides or []))
    cfg = from_dict(TrainConfig, data)
    if path is not None:
        root = resolve_data_path(path).resolve().parent
        for attr in ("prompts_file", "eval_prompts_file"):
            value = getattr(cfg.data, attr)
            if value and "://" not in value and not Path(value).is_absolute() and (root / value).exists():
                setattr(cfg.data, attr, str(root / value))
    for attr, where in (("prompts_file", "data.prompts"), ("eval_prompts_file", "data.eval_prompts")):
        if getattr(cfg.data, attr):
            load_prompts([], getattr(cfg.data, attr), where)
    return validate(cfg)


# ----------------------------------------------------------------------------- the reference (--help-config)

def _param_rows(prefix: str, entry: Any, owner: str) -> list[FieldInfo]:
    import inspect

    target = entry.obj.__init__ if isinstance(entry.obj, type) else entry.obj
    try:
        sig = inspect.signature(target).parameters
    except (TypeError, ValueError):
        sig = {}
    rows = []
    for name in entry.params or ():
        default = sig[name].default if name in sig else inspect.Parameter.empty
        rows.append(FieldInfo(f"{prefix}.{name}", "param", "(required)" if default is inspect.Parameter.empty
                              else repr(default), "finite" if isinstance(default, float) else "",
                              f"parameter of {owner}"))
    return rows


def component_rows(prefix: str, factory: Any, label: str) -> list[FieldInfo]:
    """The fields of a policy's or reward's `Config` under `prefix` (e.g. `policy.`, `rewards.0.`)."""
    cfg_cls = getattr(factory, "Config", None)
    if cfg_cls is None or not is_dataclass(cfg_cls):
        return [FieldInfo(prefix.rstrip("."), "-", "", "", f"{label} takes no parameters")]
    return describe_fields(cfg_cls, prefix)


def describe_config(data: dict | None = None) -> list[FieldInfo]:
    """Every settable key: the TrainConfig fields and, when a config's `data` is given, the fields of its
    policy's and rewards' `Config` and the parameters of its chosen methods and collector."""
    from . import advantages, aggregation, collect, objectives

    rows = describe_fields(TrainConfig)
    if data is None:
        return rows
    cfg = from_dict(TrainConfig, data)
    if cfg.policy:
        factory, _ = components.resolve(components.POLICIES, cfg.policy, "policy")
        name = cfg.policy.get("name") or cfg.policy.get("_component_")
        rows.append(FieldInfo("policy.name", "str", repr(name), "", "registered policy (mmgrpo list policies)"))
        rows += component_rows("policy.", factory, f"policy {name!r}")
    for i, spec in enumerate(cfg.rewards):
        _, _, spec = split_reward_spec(spec, f"rewards[{i}]")
        factory, _ = components.resolve(components.REWARDS, spec, f"rewards[{i}]")
        name = spec.get("name") or spec.get("_component_")
        rows += [FieldInfo(f"rewards.{i}.name", "str", repr(name), "", "registered reward (mmgrpo list rewards)"),
                 FieldInfo(f"rewards.{i}.weight", "float", "1.0", "finite", "the reward's weight in the sum; 0 = reported only"),
                 FieldInfo(f"rewards.{i}.label", "str | None", "None", "", "metric name (default: the reward's name)")]
        rows += component_rows(f"rewards.{i}.", factory, f"reward {name!r}")
    for prefix, registry, name in (("advantage.params", advantages.ADVANTAGES, cfg.advantage.name),
                                   ("loss.objective_params", objectives.OBJECTIVES, cfg.loss.objective),
                                   ("loss.aggregation_params", aggregation.AGGREGATIONS, cfg.loss.aggregation),
                                   ("sampling", collect.COLLECTORS, cfg.sampling.get("name"))):
        if isinstance(name, str) and name in registry.names():
            rows += _param_rows(prefix, registry.entry(name), f"{registry.kind} {name!r}")
    return rows


def format_reference(rows: list[FieldInfo]) -> str:
    """One line per key: key, type, default, valid range or choices, doc."""
    w = max(len(r.key) for r in rows)
    wt = min(24, max(len(r.type) for r in rows))
    wd = min(18, max(len(r.default) for r in rows))
    wv = min(22, max(len(r.valid) for r in rows))
    return "\n".join(f"{r.key:<{w}}  {r.type:<{wt}}  {r.default:<{wd}}  {r.valid:<{wv}}  {r.doc}".rstrip() for r in rows)


def render_reference() -> str:
    """docs/config.md: the TrainConfig keys and every registered policy's Config, from the declarations."""

    def table(rows: list[FieldInfo]) -> list[str]:
        def cell(text: str) -> str:
            return text.replace("|", "\\|")

        out = ["| key | type | default | valid | doc |", "|---|---|---|---|---|"]
        out += [f"| `{r.key}` | {cell(r.type)} | {cell(r.default) and f'`{cell(r.default)}`'} | {cell(r.valid)} | "
                f"{cell(r.doc)} |" for r in rows]
        return out

    lines = ["# Configuration reference", "",
             "<!-- generated by scripts/gen_config_doc.py from the config dataclasses; do not edit by hand -->", "",
             "A recipe is YAML over nested dataclasses (`mmgrpo/config.py`), read with `key=value` overrides",
             "(`optim.lr=5e-4`, `rewards.0.weight=2`). Every numeric field declares its valid range where it is",
             "declared (`mmgrpo.schema.bounded`); numbers must also be finite. Loading fails before any work on an",
             "unknown key, a wrong type, a value out of range, a YAML alias (`*name`, refused: aliases expand",
             "exponentially) or an unreadable prompt file, with one line naming the key and what would be right.",
             "Config paths may be files or `pkg://package/file.yaml` (e.g. `pkg://mmgrpo.configs/toy/tokens.yaml`).",
             "",
             "`mmgrpo train CONFIG --help-config` prints this table for a given recipe, including the fields of its",
             "policy's and rewards' `Config` and the parameters of its chosen estimator, objective, aggregation and",
             "collector. Reward fields are listed in [rewards](rewards.md); methods' parameters in [methods](methods.md).",
             "",
             "A policy or reward is named by registry name (`{name: flow, ...}`) or by `_component_: package.module:Name`:",
             "the module must lie in `mmgrpo` or a package listed in `MMGRPO_COMPONENT_PREFIXES` (comma list of package",
             "names, matched at a package boundary: `mypkg` admits `mypkg.x`, never `mypkg_evil`), and the object must",
             "be a class or function registered through an entry point or marked with `@mmgrpo.components.component`.",
             "", "## Training (`TrainConfig`)", ""]
    lines += table(describe_fields(TrainConfig))
    for name in components.POLICIES.names():
        factory = components.POLICIES.get(name)
        lines += ["", f"## Policy `{name}` (`policy.*`)", ""]
        lines += table(component_rows("policy.", factory, f"policy {name!r}"))
    return "\n".join(lines) + "\n"
