"""Renders docs/methods.md from the registries: one entry per method (what it changes, when to use it, a config
snippet), so the page and the code cannot drift (a test compares them; `scripts/gen_methods_doc.py` rewrites it).

An entry's text comes from the registered object's docstring: the paragraphs before a line starting with
"Use when:" say what it changes, that line says when to use it. Baselines of the core, whose docstrings are not
written in this form, take their guidance from `CORE_GUIDANCE` below.
"""

from __future__ import annotations

import inspect
from typing import Any

import yaml

from .. import advantages, aggregation, collect, kl, objectives, schedules
from ..inputs import ROLLOUT_FIELDS
from . import similarity

# when-to-use lines for the core's baselines (their docstrings are one-liners)
CORE_GUIDANCE = {
    ("advantages", "grpo"): "the default: binary or bounded rewards, groups of 4-16 samples per prompt.",
    ("advantages", "grpo_batch_std"): "groups are small or rewards dense and continuous (preference scores); "
                                      "avoids the per-group std's over-weighting of near-constant groups.",
    ("advantages", "dr_grpo"): "the per-group std division biases towards too easy / too hard prompts "
                               "(Dr. GRPO's argument); keeps the reward scale.",
    ("advantages", "rloo"): "an unbiased leave-one-out baseline is wanted (small groups).",
    ("objectives", "clip"): "the default token-level trust region; set eps_high > eps_low for DAPO's clip-higher.",
    ("objectives", "gspo"): "sequence-level rewards on long outputs or MoE models where token ratios are noisy.",
    ("objectives", "sapo"): "hard clipping wastes off-policy tokens; a smooth gate is preferred.",
    ("objectives", "cispo"): "every token should keep a gradient (rare, important tokens must not be clipped away).",
    ("aggregation", "seq_mean"): "GRPO's original weighting: every sequence counts the same.",
    ("aggregation", "token_mean"): "long responses should count by their tokens (DAPO); the global token count "
                                   "keeps micro-batching and ranks exact.",
    ("aggregation", "token_mean_local"): "reproducing TRL's default loss.",
    ("aggregation", "dr_grpo"): "a constant normalizer is wanted (no length bias at all); set max_len.",
    ("collectors", "single"): "the default: sample the step's groups once.",
    ("kl", "k1"): "an unbiased estimate in the reward (kl_in_reward).",
    ("kl", "k2"): "a low-variance penalty in the loss.",
    ("kl", "k3"): "the GRPO default in the loss: unbiased and non-negative.",
    ("schedules", "constant"): "a parameter should stay fixed (the same as giving the number).",
    ("schedules", "linear"): "a parameter should move steadily, e.g. Hölder's p from 2 to 0 or a length budget "
                             "from generous to tight.",
    ("schedules", "cosine"): "a parameter should move slowly at both ends and fastest mid-training.",
    ("schedules", "exponential"): "a positive parameter should shrink or grow by a constant factor per step.",
}

# parameters that are tensors or context, never set from a config
_NOT_PARAMS = {"logp", "old_logp", "advantages", "mask", "rewards", "group_ids", "ref_logp", "ctx", "self",
               "num_seqs", "num_tokens", "num_samples", "step_counts", "inner", "frac", "token_ids",
               *ROLLOUT_FIELDS, "conds", "log_probs", "raw_rewards", "group_reward_std", "step", "total_steps",
               "positions", "fp"}
# example values for parameters without a default
_EXAMPLES = {("collectors", "length_budget", "budget"): {"schedule": "linear", "start": 1024, "end": 256},
             ("schedules", "piecewise", "points"): [[0.0, 2.0], [0.5, 1.0], [1.0, 0.0]],
             ("schedules", "exponential", "end"): 0.01, ("schedules", "*", "start"): 2.0,
             ("schedules", "*", "end"): 0.0}

SECTIONS = [
    ("advantages", advantages.ADVANTAGES, "Advantage estimators",
     "How rewards become advantages (`advantage.name`, `advantage.params`)."),
    ("objectives", objectives.OBJECTIVES, "Objectives: ratios and trust regions",
     "The per-position policy loss (`loss.objective`, `loss.objective_params`; parameters may be schedules)."),
    ("aggregation", aggregation.AGGREGATIONS, "Aggregation",
     "How per-position losses become one scalar (`loss.aggregation`, `loss.aggregation_params`)."),
    ("collectors", collect.COLLECTORS, "Sampling and data (collectors)",
     "How a step's batch is gathered (`sampling: {name: ..., **params}`). Reward transforms take an `inner` "
     "collector (`inner: {name: dynamic}`) and rewrite its raw reward columns."),
    ("kl", kl.KL, "KL estimators", "`loss.kl_estimator` (with `loss.kl_beta` > 0)."),
    ("schedules", schedules.SCHEDULES, "Schedules",
     "Any numeric method parameter may be given as `{schedule: <name>, ...}` and is resolved at every step "
     "from (step, total steps) alone, so resumed runs follow it exactly. Keys: the schedule's parameters, plus "
     "`steps` (span, default the run length) and `begin` (first step)."),
    ("similarity", similarity.SIMILARITIES, "Similarities (for `sgrpo`)",
     "Pairwise sample similarities for set-level diversity, by name (`advantage.params.similarity`)."),
]


def split_doc(obj: Any) -> tuple[str, str]:
    """(what it changes, when to use it) from a docstring with a 'Use when:' paragraph."""
    doc = inspect.cleandoc(getattr(obj, "__doc__", None) or "")
    what, when = [], []
    target = what
    for line in doc.splitlines():
        if line.strip().startswith("Use when:"):
            target = when
            line = line.strip()[len("Use when:"):].strip()
        target.append(line)
    return "\n".join(what).strip(), " ".join(x.strip() for x in when).strip()


def _params(kind: str, name: str, obj: Any) -> dict:
    fn = obj.__init__ if isinstance(obj, type) else obj
    out = {}
    for pname, p in inspect.signature(fn).parameters.items():
        if pname in _NOT_PARAMS or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) or pname == "self":
            continue
        if kind == "collectors" and pname == "ctx":
            continue
        if p.default is inspect.Parameter.empty:
            out[pname] = _EXAMPLES.get((kind, name, pname), _EXAMPLES.get((kind, "*", pname), f"<{pname}>"))
        else:
            out[pname] = p.default
    return out


def _flow(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=1000).strip()


def snippet(kind: str, name: str, obj: Any) -> str:
    """A YAML config excerpt that selects the method with its default parameters."""
    params = _params(kind, name, obj)
    if kind == "advantages":
        spec: dict = {"name": name}
        if getattr(obj, "needs_zero_std_keep", False):
            spec["zero_std"] = "keep"
        if params:
            spec["params"] = params
        lines = [f"advantage: {_flow(spec)}"]
        if name == "dgpo":
            lines.append("loss: {kl_beta: 0.0}")
        return "\n".join(lines)
    if kind == "objectives":
        line = f"loss: {_flow({'objective': name, 'objective_params': params})}"
        if getattr(obj, "consumes", "log_prob") == "forward_process":   # regression on clean samples: a flow policy
            return "policy: {name: flow, sde: ode, guidance_scale: 1.0, cfg_in_training: false}\n" + line
        return line
    if kind == "aggregation":
        return f"loss: {_flow({'aggregation': name, **({'aggregation_params': params} if params else {})})}"
    if kind == "collectors":
        return f"sampling: {_flow({'name': name, **params})}"
    if kind == "kl":
        return f"loss: {_flow({'kl_beta': 0.04, 'kl_estimator': name})}"
    if kind == "schedules":
        if params.get("end", 0) is None:                               # constant: end is unused
            params.pop("end")
        spec = {"objective": "holder", "objective_params": {"p": {"schedule": name, **params, "steps": 200}}}
        return f"loss: {_flow(spec)}"
    return f"advantage: {_flow({'name': 'sgrpo', 'params': {'similarity': name}})}"


TRAINER_INPUTS = ("raw_rewards", "group_reward_std")


def needs(kind: str, obj: Any, requires: tuple[str, ...] = ()) -> list[str]:
    """Rollout fields, trainer inputs and settings the method depends on (from its declared `requires`)."""
    out = []
    fields = [f for f in requires if f in ROLLOUT_FIELDS]
    if fields:
        out.append("rollout fields " + ", ".join(f"`{f}`" for f in fields) + " (the policy must list them in "
                   "`provides`)")
    ctx = [n for n in TRAINER_INPUTS if n in requires]
    if ctx:
        out.append("trainer inputs " + ", ".join(f"`{c}`" for c in ctx))
    if getattr(obj, "needs_full_sequence", False):
        out.append("all positions in one pass (no time chunking)")
    if getattr(obj, "needs_zero_std_keep", False):
        out.append("`advantage.zero_std: keep`")
    if getattr(obj, "step_counts", None) is not None:
        out.append("step-wide bucket counts (`step_counts`) for exact micro-batching")
    for hook in getattr(obj, "policy_hooks", ()):
        out.append(f"the policy hook `{hook}`")
    return out


def render() -> str:
    """The whole docs/methods.md page."""
    lines = ["# Methods", "",
             "<!-- generated by scripts/gen_methods_doc.py from the registries; do not edit by hand -->", "",
             "Every method below is registered by name and selected from a config; `mmgrpo list` prints the same",
             "names with their one-line descriptions. References `S#` point into the seed-paper list "
             "(`CATALOG.md`).", ""]
    for _, _, title, _ in SECTIONS:
        anchor = "".join(c for c in title.lower() if c.isalnum() or c in " -").replace(" ", "-")
        lines += [f"- [{title}](#{anchor})"]
    lines.append("")
    for kind, reg, title, intro in SECTIONS:
        lines += [f"## {title}", "", intro, ""]
        for e in reg.entries():
            what, when = split_doc(e.obj)
            when = when or CORE_GUIDANCE.get((kind, e.name), "")
            head = f"### `{e.name}`" + (f" ({e.ref})" if e.ref else "")
            lines += [head, "", e.description, ""]
            if what and what.splitlines()[0].strip() != e.description.strip():
                lines += ["**What it changes.** " + what, ""]
            elif what and len(what.splitlines()) > 1:
                lines += ["**What it changes.** " + "\n".join(what.splitlines()[1:]).strip(), ""]
            if when:
                lines += ["**When to use.** " + when[0].upper() + when[1:], ""]
            dep = needs(kind, e.obj, e.requires)
            if dep:
                lines += ["**Needs.** " + "; ".join(dep) + ".", ""]
            lines += ["```yaml", snippet(kind, e.name, e.obj), "```", ""]
    return "\n".join(lines).rstrip() + "\n"
