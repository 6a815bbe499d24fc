"""The one training loop for every modality, on accelerate's engines (single process, DDP, FSDP2, DeepSpeed).

    for step in steps:
        batch = collect(step)        # sample this rank's share of the groups, score whole groups, advantages
        update(batch, step)          # epochs x minibatches x micro-batches x time chunks, one optimizer step
        log; sample; evaluate; checkpoint (atomic, no pickle)

`collect` and `update` share nothing through `self` but the built components: what passes between them is
the `TrainBatch` that `collect` returns. The policy's `trainable_module()` is `accelerate.prepare`d with the
optimizer and scheduler; backward goes through `accelerator.backward`, gradient sync is skipped
(`no_sync`) on every backward of an optimizer step but its last, and the gradient norm is clipped by
`accelerator.clip_grad_norm_`. Every loss normalizer is global (all ranks), and the engines average
gradients over ranks, so each backward is scaled by the number of processes: one rank equals two, and
micro-batch 8 x accumulation 1 equals 2 x 4.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from . import advantages as adv_mod
from . import aggregation, checkpoint, collect, components, kl, objectives, schedules
from .config import ConfigError, TrainConfig, split_reward_spec, to_dict
from .distributed import (
    Collectives,
    checkpoint_optimizer,
    configure_deepspeed,
    engine_name,
    full_tensor,
    is_sharded,
    local_tensor,
    make_accelerator,
    mark_step_boundary,
    shard_like,
    weights_loaded,
)
from .groups import GroupSampler, derive_seed, fixed_eval_batch, load_prompts
from .inputs import MethodInputs, rollout_field
from .policy import PassGenerator, PolicyBase, StepOutput
from .reward import call_reward, combine_rewards
from .rollout import Rollout


class TrainingError(RuntimeError):
    """Training stopped; the message says why and which checkpoint is the last good one."""


@dataclass
class TrainBatch:
    """What `collect` hands to `update`: this rank's samples and everything computed from the whole batch."""

    rollout: Rollout
    raw: Tensor                 # [n, K] raw reward scores of this rank's samples
    advantages: Tensor          # [n] or [n, T]
    mask: Tensor                # [n, T] trainable positions of valid samples
    group_reward_std: Tensor    # [n]
    all_advantages: Tensor      # [N] or [N, T], the whole batch (inspection, tests)
    metrics: dict


def _sum_stats(acc: dict, stats: dict) -> None:
    for k, v in stats.items():
        if k.endswith("_min"):
            acc[k] = min(acc.get(k, math.inf), v)
        elif k.endswith("_max"):
            acc[k] = max(acc.get(k, -math.inf), v)
        else:
            acc.setdefault(k, []).append(v)


def _finish_stats(acc: dict) -> dict:
    return {k: (sum(v) / len(v) if isinstance(v, list) else v) for k, v in acc.items() if v != []}


def _policy_inputs(rollout: Rollout, names: tuple[str, ...]) -> dict[str, Any]:
    return {n: rollout_field(rollout, n) for n in names}


class Trainer:
    """Runs a `TrainConfig` with any `PolicyBase` adapter and rewards. Build it, then call `fit()`."""

    def __init__(self, cfg: TrainConfig, policy: Any = None, rewards: list | None = None, accelerator: Any = None):
        self.cfg = cfg
        self.run_dir = Path(cfg.run_dir)
        trackers = list(cfg.trackers) if cfg.tensorboard else [t for t in cfg.trackers if t != "tensorboard"]
        self.acc = accelerator or make_accelerator(cfg.mixed_precision, trackers, str(self.run_dir))
        self.dist = Collectives(self.acc)
        self.rank, self.world = self.dist.rank, self.dist.world
        self.is_main = self.acc.is_main_process
        self.engine = engine_name(self.acc)
        torch.manual_seed(cfg.seed)                       # same init on every rank
        self.policy = policy if policy is not None else components.build(
            components.POLICIES, cfg.policy, "policy", device=self.acc.device)
        if not isinstance(self.policy, PolicyBase):
            raise ConfigError(f"policy: {type(self.policy).__name__} must subclass mmgrpo.policy.PolicyBase")
        self.rewards = rewards if rewards is not None else self._build_rewards()
        self.reward_weights = [w for _, _, w in self.rewards]
        self.prompts = load_prompts(cfg.data.prompts, cfg.data.prompts_file, "data.prompts")
        self.eval_prompts = load_prompts(cfg.data.eval_prompts, cfg.data.eval_prompts_file, "data.eval_prompts")
        if cfg.batch_size % self.world:
            raise ConfigError(f"batch_size={cfg.batch_size} must split evenly over the {self.world} processes")
        self.sampler = GroupSampler(self.prompts, cfg.data.group_size, cfg.batch_size, cfg.seed, self.rank, self.world)
        self.n_local = cfg.batch_size // self.world
        self.micro = cfg.micro_batch_size or self.n_local
        per_opt = self.micro * cfg.grad_accum
        if self.n_local % per_opt:
            raise ConfigError(
                f"micro_batch_size={self.micro} x grad_accum={cfg.grad_accum} = {per_opt} samples per optimizer "
                f"step must divide the {self.n_local} samples each process holds (batch_size={cfg.batch_size} over "
                f"{self.world} processes)")
        module = self.policy.trainable_module()
        if not any(p.requires_grad for p in module.parameters()):
            raise ConfigError("policy: has no trainable parameters (check its LoRA / freezing settings)")
        o = cfg.optim
        optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=o.lr,
                                      betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)
        opt_steps = cfg.steps * cfg.inner_epochs * (self.n_local // per_opt)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self._lr_lambda(opt_steps))
        try:
            configure_deepspeed(self.acc, self.micro, o.grad_clip)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.model, self.optimizer, self.scheduler = self.acc.prepare(module, optimizer, scheduler)
        self.policy.bind_prepared(self.model)
        # the trainable parameters after prepare (FSDP2 swaps them for sharded DTensors in place)
        self.named_params = [(n, p) for n, p in self.acc.unwrap_model(self.model).named_parameters() if p.requires_grad]
        self.params = [p for _, p in self.named_params]
        self.grad_scale = float(self.world)              # the engines average gradients; our normalizers are global
        self.ema = [p.detach().clone() for p in self.params] if o.ema_decay else None
        obj_entry = objectives.OBJECTIVES.entry(cfg.loss.objective)
        self.objective, self.objective_requires = obj_entry.obj, obj_entry.requires
        self.forward_process = getattr(obj_entry.obj, "consumes", "log_prob") == "forward_process"
        est_entry = adv_mod.ADVANTAGES.entry(cfg.advantage.name)
        est = est_entry.obj
        # a registered estimator may be a class (stateful, e.g. a value tracker): built once with its params,
        # its state_dict() saved in checkpoints
        self.estimator, self.adv_params = (est(**cfg.advantage.params), {}) if isinstance(est, type) \
            else (est, dict(cfg.advantage.params))
        self.estimator_requires = est_entry.requires
        agg_entry = aggregation.AGGREGATIONS.entry(cfg.loss.aggregation)
        self.aggregate_fn, self.aggregate_requires = agg_entry.obj, agg_entry.requires
        sampling = dict(cfg.sampling)
        col = collect.get(sampling.pop("name"))
        self.collector, self.collect_params = (col(**sampling), {}) if isinstance(col, type) else (col, sampling)
        self.kl_fn = kl.get(cfg.loss.kl_estimator)
        self.step = 0
        self._metrics_lines = 0
        self.last: TrainBatch | None = None           # the last step's batch, for inspection and sample saving

    # ------------------------------------------------------------------ construction helpers
    def _build_rewards(self) -> list[tuple[str, Any, float]]:
        out = []
        for i, spec in enumerate(self.cfg.rewards):
            weight, label, spec = split_reward_spec(spec, f"rewards[{i}]")
            fn = components.build(components.REWARDS, spec, f"rewards[{i}]", device=self.acc.device)
            name = label or getattr(fn, "name", None) or spec.get("name") or f"reward{i}"
            if name in [n for n, _, _ in out]:
                raise ConfigError(f"rewards[{i}]: two rewards are named {name!r}; give one a distinct `label`")
            out.append((name, fn, weight))
        return out

    def _lr_lambda(self, total: int):
        o = self.cfg.optim

        def f(i: int) -> float:
            if o.warmup_steps and i < o.warmup_steps:
                return (i + 1) / o.warmup_steps
            frac = (i - o.warmup_steps) / max(1, total - o.warmup_steps)
            if o.schedule == "linear":
                return max(0.0, 1 - frac)
            if o.schedule == "cosine":
                return 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))
            return 1.0

        return f

    @property
    def last_advantages(self) -> Tensor | None:
        return None if self.last is None else self.last.all_advantages

    @property
    def _last_rollout(self) -> Rollout | None:
        return None if self.last is None else self.last.rollout

    def _autocast(self):
        return self.acc.autocast() if self.cfg.mixed_precision != "no" else contextlib.nullcontext()

    # ------------------------------------------------------------------ collect: sample, score, advantages
    def score(self, rollout: Rollout) -> Tensor:
        """Raw rewards [n, K] of this rank's samples (NaN = not applicable); groupwise rewards see whole groups."""
        cols = []
        for _, fn, _ in self.rewards:
            if getattr(fn, "groupwise", False) and self.world > 1:
                parts = self.dist.gather_object([rollout.outputs])
                outputs = torch.cat(parts) if isinstance(parts[0], Tensor) else [x for o in parts for x in o]
                conds = self.dist.gather_object(list(rollout.conds))
                gids = self.dist.gather(rollout.group_ids)
                where = self.dist.local_slice(len(rollout))       # this rank's rows, whatever the counts per rank
                scores = call_reward(fn, outputs, conds, gids)[where]
            else:
                scores = call_reward(fn, rollout.outputs, rollout.conds, rollout.group_ids)
            cols.append(scores)
        return torch.stack(cols, 1) if cols else torch.zeros(len(rollout), 0)

    def _sequence_kl(self, rollout: Rollout) -> Tensor:
        """Masked mean KL per sample [n] at sampling time (for kl_in_reward)."""
        with torch.no_grad(), self._autocast():
            full = slice(0, rollout.num_positions)
            out = self.policy.log_prob(rollout, full)
            k = self.policy.reference_kl(rollout, full, out, self.kl_fn).float().cpu()
        m = rollout.mask.float()
        return (k * m).sum(1) / m.sum(1).clamp(min=1)

    def _estimator_inputs(self, rollout: Rollout, all_raw: Tensor, step: int) -> MethodInputs:
        """Gathered (all-rank) inputs the estimator declared."""
        values: dict[str, Any] = {}
        for name in self.estimator_requires:
            if name == "raw_rewards":
                values[name] = all_raw
            elif name == "conds":
                values[name] = self.dist.gather_object(list(rollout.conds))
            else:
                value = rollout_field(rollout, name)
                if value is None:
                    raise ConfigError(f"advantage {self.cfg.advantage.name!r} needs rollout field {name!r}, "
                                      "which this policy did not fill")
                values[name] = self.dist.gather_padded(value)
        return MethodInputs(step=step, total_steps=self.cfg.steps, **values)

    def advantages(self, rollout: Rollout, raw: Tensor, step: int, kl_seq: Tensor | None = None
                   ) -> tuple[Tensor, Tensor, Tensor, Tensor, dict]:
        """Gather rewards, combine, estimate; returns (local adv, local valid, local group std, all adv, metrics)."""
        cfg = self.cfg
        all_raw = self.dist.gather(raw)                                    # [N, K]
        all_gid = self.dist.gather(rollout.group_ids)                      # [N]
        local = self.dist.local_slice(len(rollout))
        weights = torch.tensor(self.reward_weights, dtype=torch.float32)
        metrics: dict[str, float] = {}
        finite = torch.isfinite(all_raw)
        for k, (name, _, _) in enumerate(self.rewards):
            col = all_raw[:, k][finite[:, k]]
            metrics[f"reward/{name}/mean"] = col.mean().item() if col.numel() else float("nan")
        total = combine_rewards(all_raw, weights)                          # NaN if a member is not applicable
        if kl_seq is not None:
            total = total - cfg.loss.kl_beta * self.dist.gather(kl_seq)
        valid = torch.isfinite(total)
        metrics["reward/nonfinite_count"] = float((~valid).sum())
        r = total[valid]
        metrics["reward/mean"] = r.mean().item() if r.numel() else float("nan")
        metrics["reward/std"] = r.std(unbiased=False).item() if r.numel() > 1 else 0.0
        adv = torch.zeros_like(total)
        inputs = self._estimator_inputs(rollout, all_raw, step)
        if valid.any():
            if cfg.advantage.reward_mode == "normalize_then_sum" and len(self.rewards) > 1:
                adv[valid] = adv_mod.normalize_then_sum(all_raw[valid], all_gid[valid], weights)
            else:
                picked = {k: (v[valid] if isinstance(v, Tensor) and v.shape[:1] == valid.shape else
                              [x for x, ok in zip(v, valid.tolist()) if ok] if isinstance(v, list) else v)
                          for k, v in inputs.pick(self.estimator_requires, f"advantage {cfg.advantage.name!r}").items()}
                params = schedules.resolve(self.adv_params, step, cfg.steps, "advantage.params")
                out = self.estimator(total[valid], all_gid[valid], **picked, **params)
                if out.dim() == 2:                                         # dense [N, T] advantages
                    adv = torch.zeros(total.shape[0], out.shape[1], dtype=out.dtype)
                adv[valid] = out.to(adv.dtype)
        zero = torch.zeros_like(valid)
        group_std = torch.zeros_like(total)
        if valid.any():
            group_std[valid] = adv_mod.group_mean_std(total[valid], all_gid[valid])[1]
            zero[valid] = group_std[valid] <= 1e-8                          # as adv_mod.zero_std_mask
        n_groups = max(1, all_gid.unique().numel())
        metrics["zero_std_frac"] = all_gid[zero].unique().numel() / n_groups
        if cfg.advantage.zero_std == "mask":
            valid = valid & ~zero
        adv = adv_mod.clip_advantages(adv, cfg.advantage.clip)
        vmask = valid if adv.dim() == 1 else valid.unsqueeze(1)
        adv = torch.where(vmask, adv, torch.zeros_like(adv))
        metrics["adv/abs_mean"] = adv[valid].abs().mean().item() if valid.any() else 0.0
        width = rollout.num_positions
        local_adv = adv[local] if adv.dim() == 1 else adv[local, :width]
        return local_adv, valid[local], group_std[local], adv, metrics

    def collect(self, step: int) -> TrainBatch:
        """Sample this rank's share of the step's groups (through the collector), score, advantages."""
        cfg = self.cfg
        t0 = time.perf_counter()
        self.policy.eval()
        score_time = [0.0]

        def sample(b):
            with torch.no_grad(), self._autocast():
                return self.policy.sample(b)

        def score(r):
            t = time.perf_counter()
            out = self.score(r)
            score_time[0] += time.perf_counter() - t
            return out

        cctx = collect.CollectContext(step=step, batch=self.sampler.local_batch(step), sample=sample, score=score,
                                      sampler=self.sampler, gather=self.dist.gather, all_sum=self.dist.all_sum,
                                      rank=self.rank, world_size=self.world, policy=self.policy,
                                      reward_weights=self.reward_weights, total_steps=cfg.steps,
                                      gather_object=self.dist.gather_object)
        rollout, raw = self.collector(cctx, **schedules.resolve(self.collect_params, step, cfg.steps, "sampling"))
        timings = {"time/sample": time.perf_counter() - t0 - score_time[0]}
        t1 = time.perf_counter()
        kl_seq = self._sequence_kl(rollout) if cfg.loss.kl_beta > 0 and cfg.loss.kl_in_reward else None
        adv, valid, gstd, all_adv, metrics = self.advantages(rollout, raw, step, kl_seq)
        rollout = self.policy.with_advantages(rollout, adv)
        timings["time/reward"] = time.perf_counter() - t1 + score_time[0]
        metrics.update(timings)
        return TrainBatch(rollout=rollout, raw=raw, advantages=adv, mask=rollout.mask & valid.unsqueeze(1),
                          group_reward_std=gstd, all_advantages=all_adv, metrics=metrics)

    # ------------------------------------------------------------------ update: epochs, minibatches, chunks
    def _time_chunks(self, t: int) -> list[slice]:
        c = self.policy.time_chunk or t
        return [slice(i, min(i + c, t)) for i in range(0, t, c)] if t else []

    def _generator(self, step: int, sub: Tensor, pos: slice) -> PassGenerator:
        """One generator per (step, micro-batch, chunk): old, reference and current log-probs draw the same;
        its `for_sample(i)` streams depend only on the sample (rank, index in the step's batch) and the chunk."""
        first = int(sub[0]) + self.rank * 1_000_003 if len(sub) else 0
        seeds = [derive_seed(self.cfg.seed, step, self.rank, int(i), pos.start, 0x5A1) for i in sub.tolist()]
        return PassGenerator(derive_seed(self.cfg.seed, step, first, pos.start, 0x6E4), seeds,
                             chunk_seed=derive_seed(self.cfg.seed, step, pos.start, 0x6E5))

    def _recompute_old(self, batch: TrainBatch, step: int) -> None:
        """Old log-probs under the current weights, before the first update (Monte Carlo estimators)."""
        r = batch.rollout
        lp = torch.zeros_like(r.log_probs)
        with torch.no_grad(), self._autocast():
            for ms in range(0, len(r), self.micro):
                sub = torch.arange(ms, min(ms + self.micro, len(r)))
                mb = r.select(sub)
                for pos in self._time_chunks(r.num_positions):
                    out = self.policy.log_prob(mb, pos, self._generator(step, sub, pos))
                    lp[sub, pos] = out.log_probs.float().to(lp.device)
        r.log_probs = lp

    def update(self, batch: TrainBatch, step: int) -> dict:
        cfg = self.cfg
        self.policy.train()
        if self.policy.recompute_old_log_probs:
            self._recompute_old(batch, step)
        stats: dict = {}
        per_opt = self.micro * cfg.grad_accum
        obj_params = schedules.resolve(cfg.loss.objective_params, step, cfg.steps, "loss.objective_params")
        agg_params = schedules.resolve(cfg.loss.aggregation_params, step, cfg.steps, "loss.aggregation_params")
        n = len(batch.rollout)              # a collector may keep fewer than batch_size / processes (d3s)
        for epoch in range(cfg.inner_epochs):
            order = torch.arange(n)
            if cfg.shuffle_minibatches:
                g = torch.Generator().manual_seed(derive_seed(cfg.seed, step, epoch, self.rank, 3))
                order = order[torch.randperm(n, generator=g)]
            for start in range(0, n, per_opt):
                self._optimizer_step(batch, order[start:start + per_opt], stats, obj_params, agg_params, step)
        return _finish_stats(stats)

    def _optimizer_step(self, batch: TrainBatch, idx: Tensor, stats: dict, obj_params: dict, agg_params: dict,
                        step: int) -> None:
        cfg = self.cfg
        rollout, adv, mask = batch.rollout, batch.advantages, batch.mask
        m_all = mask[idx]
        counts = self.dist.all_sum([float((m_all.sum(1) > 0).sum()), float(m_all.sum()), float(len(idx))])
        if counts[1] == 0:          # every group of this minibatch was masked: no signal, no Adam step
            _sum_stats(stats, {"skipped_updates": 1.0})
            with warnings.catch_warnings():   # the schedule follows training progress, not the update count
                warnings.simplefilter("ignore", UserWarning)
                self.scheduler.step()
            return
        step_inputs = dict(num_seqs=counts[0], num_tokens=counts[1], num_samples=counts[2], step=step,
                           total_steps=cfg.steps)
        step_counts = getattr(self.aggregate_fn, "step_counts", None)
        if step_counts is not None:          # mode-specific normalizers of the whole optimizer step (all ranks)
            step_inputs["step_counts"] = self.dist.all_sum(step_counts(m_all, adv[idx]))
        # Every rank runs the same passes (FSDP gathers parameters in each forward, DDP syncs in the last
        # backward): a (micro-batch, chunk) pass runs when any rank has a valid position in it.
        subs = [idx[ms: ms + self.micro] for ms in range(0, len(idx), self.micro)]
        passes = [(sub, pos) for sub in subs for pos in self._time_chunks(rollout.num_positions)] \
            if not self.forward_process else [(sub, slice(0, rollout.num_positions)) for sub in subs]
        has = [float(mask[sub][:, pos].any()) for sub, pos in passes]
        has = self.dist.all_sum(has) if self.world > 1 else has
        passes = [p for p, h in zip(passes, has) if h > 0]
        beta_loss = cfg.loss.kl_beta if not cfg.loss.kl_in_reward else 0.0
        for k, (sub, pos) in enumerate(passes):
            sync = k == len(passes) - 1
            if self.engine == "deepspeed":             # the engine steps itself at the boundary we name
                mark_step_boundary(self.acc, sync)
            quiet = sync or self.world == 1 or self.engine == "deepspeed"
            with (contextlib.nullcontext() if quiet else self.acc.no_sync(self.model)):
                loss, st = self._pass_loss(batch, sub, pos, step_inputs, obj_params, agg_params, beta_loss, step)
                if not torch.isfinite(loss):
                    raise TrainingError(f"non-finite loss ({loss.item()}) at step {self.step}")
                self.acc.backward(loss * self.grad_scale)
            if st:
                st["loss"] = loss.item()
                _sum_stats(stats, st)
        max_norm = cfg.optim.grad_clip if cfg.optim.grad_clip is not None else math.inf
        norm = self.acc.clip_grad_norm_(self.model.parameters(), max_norm)
        _sum_stats(stats, {"grad_norm": float(full_tensor(norm)) if norm is not None else float("nan")})
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if self.ema is not None:
            d = cfg.optim.ema_decay
            with torch.no_grad():
                for e, p in zip(self.ema, self.params):
                    e.mul_(d).add_(p.detach(), alpha=1 - d)

    def _pass_loss(self, batch: TrainBatch, sub: Tensor, pos: slice, step_inputs: dict, obj_params: dict,
                   agg_params: dict, beta_loss: float, step: int) -> tuple[Tensor, dict]:
        """The loss of one (micro-batch, time chunk) pass, already weighted by the global normalizers."""
        cfg = self.cfg
        mb = batch.rollout.select(sub)
        m = batch.mask[sub]
        a = batch.advantages[sub].to(self.acc.device)
        gen = self._generator(step, sub, pos)
        if self.forward_process:                       # regression on clean samples (AWM, DiffusionNFT)
            valid = m.any(1).to(self.acc.device)                                  # [n]
            needs = tuple(getattr(self.objective, "forward_inputs", ())) + (("v_ref",) if beta_loss > 0 else ())
            with self._autocast():
                fp = self.policy.forward_process(mb, gen, needs=needs, step=step)
            a_s = a if a.dim() == 1 else a.mean(1)
            picked = MethodInputs(**step_inputs, **_policy_inputs(mb, self.objective_requires)
                                  ).pick(self.objective_requires, f"loss.objective {cfg.loss.objective!r}")
            loss_n, st = self.objective(fp, a_s, valid, **picked, **obj_params)  # [n]
            if beta_loss > 0:                          # the policy's anchor to the reference, per sample
                loss_n = loss_n + beta_loss * fp["kl_ref"]
                st["kl_ref"] = fp["kl_ref"].detach()[valid].mean().item() if valid.any() else 0.0
            loss = torch.where(valid, loss_n, torch.zeros_like(loss_n)).sum() / max(step_inputs["num_seqs"], 1.0)
            return loss, (st if valid.any() else {})
        chunks = self._time_chunks(mb.num_positions)
        if len(chunks) > 1 and getattr(self.objective, "needs_full_sequence", False):
            raise ConfigError(f"loss.objective {cfg.loss.objective!r} forms a sequence-level ratio and needs all "
                              f"positions in one pass; set the policy's time_chunk to null (it is "
                              f"{self.policy.time_chunk})")
        agg_inputs = MethodInputs(advantages=a, **step_inputs).pick(self.aggregate_requires, "loss.aggregation")
        w = self.aggregate_fn(m, **agg_inputs, **agg_params)                      # [n, T]
        mp = m[:, pos].to(self.acc.device)
        with self._autocast():
            out: StepOutput = self.policy.log_prob(mb, pos, gen)
        logp = out.log_probs.float()                                              # [n, c]
        old = mb.log_probs[:, pos].to(logp.device).float()
        a_pos = a if a.dim() == 1 else a[:, pos]
        fields = {}
        for name in self.objective_requires:
            if name == "group_reward_std":
                fields[name] = batch.group_reward_std[sub].to(logp.device)
            elif name == "positions":
                fields[name] = pos
            elif name not in step_inputs:
                value = rollout_field(mb, name)
                if value is not None and isinstance(value, Tensor):
                    value = value[:, pos].to(logp.device) if value.dim() == 2 else value.to(logp.device)
                fields[name] = value
        picked = MethodInputs(**{**step_inputs, **fields}).pick(self.objective_requires,
                                                                f"loss.objective {cfg.loss.objective!r}")
        loss_pt, st = self.objective(logp, old, a_pos, mp, **picked, **obj_params)
        if beta_loss > 0:
            with self._autocast():
                kl_pt = self.policy.reference_kl(mb, pos, out, self.kl_fn, gen).float()
            loss_pt = loss_pt + beta_loss * kl_pt
            if mp.any():
                st["kl_ref"] = kl_pt.detach()[mp].mean().item()
        loss = torch.where(mp, loss_pt * w[:, pos].to(loss_pt.device), torch.zeros_like(loss_pt)).sum()
        if not mp.any():
            return loss, {}
        with torch.no_grad():
            d = (logp - old)[mp]
            st["approx_kl"] = (0.5 * d.pow(2)).mean().item()
        return loss, st

    def train_step(self, step: int) -> dict:
        """One step: collect a batch, update on it; returns the step's metrics."""
        batch = self.collect(step)
        t2 = time.perf_counter()
        metrics = dict(batch.metrics)
        metrics.update(self.update(batch, step))
        metrics["time/train"] = time.perf_counter() - t2
        metrics["lr"] = self.scheduler.get_last_lr()[0]
        metrics["step"] = step
        self.last = batch
        return metrics

    # ------------------------------------------------------------------ evaluation
    @contextlib.contextmanager
    def ema_weights(self):
        """Swap the EMA weights in (if any) for evaluation, restoring the live ones after."""
        if self.ema is None:
            yield
            return
        live = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, e in zip(self.params, self.ema):
                p.copy_(e)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, v in zip(self.params, live):
                    p.copy_(v)

    def evaluate(self, prompts: list | None = None, save_prefix: Path | None = None) -> dict:
        """Mean reward of each reward on held-out prompts with fixed seeds (EMA weights if kept)."""
        prompts = self.eval_prompts if prompts is None else prompts
        if not prompts:
            return {}
        batch = fixed_eval_batch(prompts, self.cfg.eval_group_size, self.cfg.seed, self.rank, self.world)
        self.policy.eval()
        with torch.no_grad(), self.ema_weights(), self._autocast():
            rollout = self.policy.sample(batch, evaluate=True)
        raw = self.score(rollout)
        out = {}
        raw_all = self.dist.gather(raw)
        for k, (name, _, _) in enumerate(self.rewards):
            col = raw_all[:, k][torch.isfinite(raw_all[:, k])]
            out[f"eval/{name}"] = col.mean().item() if col.numel() else float("nan")
        if save_prefix is not None and self.is_main:
            self.policy.save_samples(save_prefix, rollout, raw.nan_to_num(0).sum(1))
        return out

    # ------------------------------------------------------------------ run directory and checkpoints
    def _full_trainable_state(self) -> dict[str, Tensor]:
        """Full (unsharded) trainable weights by the policy's names; every rank must call it (FSDP gathers)."""
        return {k: full_tensor(v).detach().cpu() for k, v in self.policy.state_dict_trainable().items()}

    def save_checkpoint(self) -> Path | None:
        """Stage every file in a hidden folder, then rename it into place: a kill never leaves half a checkpoint.

        No pickle: weights, EMA, optimizer moments and RNG states are safetensors; everything else JSON. Under
        FSDP each rank writes its own optimizer shard (resume needs the same number of processes)."""
        staged = checkpoint.staging_dir(self.run_dir, self.step)
        if self.is_main:
            staged.mkdir(parents=True, exist_ok=True)
        self.acc.wait_for_everyone()
        # FSDP2 DTensors and DeepSpeed's fp32 partitions: each rank holds its own part of the optimizer state
        sharded = any(is_sharded(p) for p in self.params) or self.engine == "deepspeed"
        checkpoint.save_rng(staged, self.rank)
        weights = self._full_trainable_state()
        ema = {f"ema_{i:04d}": full_tensor(e).detach().cpu() for i, e in enumerate(self.ema)} if self.ema else None
        opt_tensors, opt_meta = checkpoint.flatten_optimizer(checkpoint_optimizer(self.acc, self.optimizer).state_dict(),
                                                         local_tensor)
        if sharded or self.is_main:
            checkpoint.save_tensors(staged / f"optimizer_rank{self.rank if sharded else 0}.safetensors", opt_tensors)
        tensor_files = [f"optimizer_rank{'{rank}' if sharded else 0}.safetensors", "rng_rank{rank}.safetensors"]
        json_files = ["optimizer.json", "rng_rank{rank}.json"]
        if self.is_main:
            checkpoint.save_tensors(staged / "policy.safetensors", weights)
            if ema is not None:
                checkpoint.save_tensors(staged / "ema.safetensors", ema)
                tensor_files.append("ema.safetensors")
            opt_meta["scheduler"] = self.scheduler.scheduler.state_dict() if hasattr(self.scheduler, "scheduler") \
                else self.scheduler.state_dict()
            opt_meta["scheduler"].pop("lr_lambdas", None)
            (staged / "optimizer.json").write_text(json.dumps(opt_meta))
            methods = {k: obj.state_dict() for k, obj in (("estimator", self.estimator), ("collector", self.collector))
                       if callable(getattr(obj, "state_dict", None))}
            if methods:
                (staged / "methods.json").write_text(json.dumps(methods))
                json_files.append("methods.json")
            self.policy.save_pretrained(staged / "export", state=weights)
            checkpoint.atomic_write_text(staged / "trainer_state.json", json.dumps(
                {"step": self.step, "metrics_lines": self._metrics_lines, "world_size": self.world,
                 "engine": self.engine, "sharded_optimizer": sharded, "tensor_files": tensor_files,
                 "json_files": json_files}))
        self.acc.wait_for_everyone()
        final = checkpoint.publish(self.run_dir, self.step, self.cfg.keep_checkpoints) if self.is_main else None
        self.acc.wait_for_everyone()
        return final

    def load_checkpoint(self, path: Path) -> None:
        """Restore weights, EMA, optimizer, scheduler, method states and this rank's RNG from `path`."""
        state = checkpoint.read_json(path / "trainer_state.json")
        if state.get("sharded_optimizer") and state.get("world_size") != self.world:
            raise TrainingError(f"{path} holds optimizer shards of {state.get('world_size')} processes; resume it "
                                f"with --num_processes {state.get('world_size')} (this run has {self.world})")
        weights = checkpoint.load_tensors(path / "policy.safetensors")
        named = dict(self.policy.state_dict_trainable())
        if any(is_sharded(v) for v in named.values()):
            with torch.no_grad():
                for k, v in named.items():
                    if k not in weights:
                        raise checkpoint.CheckpointError(f"{path / 'policy.safetensors'} lacks the weight {k!r}")
                    local_tensor(v).copy_(shard_like(weights[k], v))
        else:
            self.policy.load_state_dict_trainable(weights)
        weights_loaded(self.acc, self.optimizer)
        if self.ema is not None and (path / "ema.safetensors").exists():
            ema = checkpoint.load_tensors(path / "ema.safetensors")
            with torch.no_grad():
                for i, e in enumerate(self.ema):
                    local_tensor(e).copy_(shard_like(ema[f"ema_{i:04d}"], e))
        meta = checkpoint.read_json(path / "optimizer.json")
        shard = self.rank if state.get("sharded_optimizer") else 0
        tensors = checkpoint.load_tensors(path / f"optimizer_rank{shard}.safetensors")
        opt_sd = checkpoint.unflatten_optimizer(tensors, meta)
        if state.get("sharded_optimizer"):          # local shards back into DTensors laid out like the params
            from torch.distributed.tensor import DTensor

            for pid, st in opt_sd["state"].items():
                p = self.params[pid]
                for key, value in list(st.items()):
                    if isinstance(p, DTensor) and isinstance(value, Tensor) and value.dim() > 0:
                        st[key] = DTensor.from_local(value, p.device_mesh, p.placements, run_check=False,
                                                     shape=p.shape, stride=p.stride())
        checkpoint_optimizer(self.acc, self.optimizer).load_state_dict(opt_sd)
        sched = self.scheduler.scheduler if hasattr(self.scheduler, "scheduler") else self.scheduler
        sched.load_state_dict({**meta["scheduler"], "lr_lambdas": [None] * len(sched.lr_lambdas)})
        if (path / "methods.json").exists():
            methods = checkpoint.read_json(path / "methods.json")
            for k, obj in (("estimator", self.estimator), ("collector", self.collector)):
                if k in methods:
                    obj.load_state_dict(methods[k])
        checkpoint.load_rng(path, self.rank)
        self.step = state["step"]
        self._metrics_lines = state["metrics_lines"]
        if self.is_main:
            checkpoint.truncate_jsonl(self.run_dir / "metrics.jsonl", self._metrics_lines)

    def _log(self, metrics: dict) -> None:
        scalars = {k: v for k, v in metrics.items()
                   if isinstance(v, (int, float)) and k != "step" and math.isfinite(v)}
        if self.acc.trackers:
            self.acc.log(scalars, step=metrics.get("step", self.step))
        if not self.is_main:
            return
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(metrics) + "\n")
        self._metrics_lines += 1

    def _say(self, text: str) -> None:
        if self.is_main:
            print(f"mmgrpo: {text}", flush=True)

    def _open_run_dir(self, resume: bool) -> None:
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            import yaml

            for stale in checkpoint.remove_stale_staging(self.run_dir):
                self._say(f"removed {stale}, a checkpoint a crashed run never finished")
            checkpoint.atomic_write_text(self.run_dir / "config.yaml", yaml.safe_dump(to_dict(self.cfg), sort_keys=False))
            if not resume:
                old = checkpoint.latest_checkpoint(self.run_dir)
                if old is not None and not self.cfg.overwrite:
                    raise TrainingError(
                        f"{self.run_dir} already holds checkpoints of an earlier run ({old.name}); continue it with "
                        "--resume, choose another run_dir, or pass overwrite=true to replace it")
                if old is not None:
                    import shutil

                    shutil.rmtree(self.run_dir / "checkpoints")
                for name in ("metrics.jsonl", "curves.png"):
                    if (self.run_dir / name).exists():
                        (self.run_dir / name).unlink()
        self.acc.wait_for_everyone()
        if resume:
            newest = checkpoint.latest_checkpoint(self.run_dir)
            agree = (lambda ok: [bool(x) for x in self.dist.gather_object([ok])]) if self.world > 1 else None
            # with several processes each names the files it cannot read (rank 0 would not see them)
            warn = self._say if self.world == 1 else (lambda m: print(f"mmgrpo: [process {self.rank}] {m}", flush=True))
            ckpt = checkpoint.usable_checkpoint(self.run_dir, self.rank, warn=warn, agree=agree)
            if ckpt is None:
                where = self.run_dir / "checkpoints"
                raise TrainingError(f"--resume: no checkpoint under {where} can be used" +
                                    (" (every one is corrupt or incomplete, see above)" if newest else "") +
                                    "; start without --resume (overwrite=true to replace the run)")
            if newest is not None and ckpt != newest:
                self._say(f"resuming from {ckpt.name}, the newest complete checkpoint")
            self.load_checkpoint(ckpt)
        if not self.acc.trackers and self.acc.log_with:
            self.acc.init_trackers("tb")

    # ------------------------------------------------------------------ the loop
    def fit(self, resume: bool = False) -> dict:
        """Train for `cfg.steps` steps (continuing from the last checkpoint with `resume`)."""
        from tqdm.auto import tqdm

        cfg = self.cfg
        self._open_run_dir(resume)
        summary: dict[str, Any] = {}
        if self.eval_prompts and not resume:
            try:
                summary["eval_before"] = self.evaluate(save_prefix=self.run_dir / "samples" / "eval_before")
            except Exception as exc:
                raise TrainingError(f"evaluation before training failed: {exc}") from exc
            self._log({"step": 0, **summary["eval_before"]})
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not (cfg.progress and self.is_main),
                   desc="mmgrpo", unit="step", dynamic_ncols=True)
        last_ckpt = checkpoint.latest_checkpoint(self.run_dir)
        history = defaultdict(list)
        try:
            while self.step < cfg.steps:
                try:
                    metrics = self.train_step(self.step)
                except Exception as exc:
                    where = f"the last good checkpoint is {last_ckpt}" if last_ckpt else "no checkpoint was written yet"
                    raise TrainingError(f"training stopped at step {self.step}: {exc} ({where}; "
                                        "fix the cause and rerun with --resume)") from exc
                self.step += 1
                metrics["step"] = self.step
                if cfg.sample_every and self.step % cfg.sample_every == 0 and self.is_main:
                    self.policy.save_samples(self.run_dir / "samples" / f"step_{self.step:06d}",
                                             self.last.rollout, self.last.raw.nan_to_num(0).sum(1))
                if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < cfg.steps:
                    metrics.update(self.evaluate())
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    self._log(metrics)
                history["reward/mean"].append(metrics["reward/mean"])
                bar.set_postfix(reward=f"{metrics['reward/mean']:.3f}", zero_std=f"{metrics['zero_std_frac']:.2f}")
                bar.update(1)
                if (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0) or self.step == cfg.steps:
                    last_ckpt = self.save_checkpoint()
        finally:
            bar.close()
        if self.eval_prompts:
            summary["eval_after"] = self.evaluate(save_prefix=self.run_dir / "samples" / "eval_after")
            self._log({"step": self.step, **summary["eval_after"]})
        for tracker in self.acc.trackers:          # not end_training(): that also ends the process group
            tracker.finish()
        summary["reward_history"] = history["reward/mean"]
        summary["checkpoint"] = str(last_ckpt) if last_ckpt else None
        if self.is_main:
            from .plot import plot_run

            try:
                summary["plot"] = str(plot_run(self.run_dir))
            except Exception as exc:  # noqa: BLE001 - a plot must never lose a finished run
                summary["plot_error"] = str(exc)
        return summary
