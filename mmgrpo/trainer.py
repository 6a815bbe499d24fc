"""The one training loop for every modality: rollout, reward, gathered advantages, clipped updates.

    for step in steps:
        batch   = group_sampler.local_batch(step)              # this rank's share of the groups
        rollout = policy.sample(batch)                         # no grad
        rewards = reward(rollout.outputs, rollout.conds)       # [n], NaN = not applicable
        adv     = estimator(gather(rewards), gather(group_ids))[local]
        for epoch, minibatch, micro-batch, time chunk:
            loss = aggregate(objective(policy.log_prob(...), old, adv, mask)) (+ beta * KL)
            backward; all-reduce and step the optimizer once per minibatch

Gradients are summed across ranks by hand (one flat all-reduce) and every normalizer is global, so one
rank equals two and micro-batch 8 x accumulation 1 equals 2 x 4.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from . import advantages as adv_mod
from . import aggregation, checkpoint, collect, components, context, kl, objectives, schedules
from .config import ConfigError, TrainConfig, split_reward_spec, to_dict
from .groups import GroupSampler, fixed_eval_batch, load_prompts
from .media import save_outputs
from .reward import call_reward
from .rollout import Rollout


class TrainingError(RuntimeError):
    """Training stopped; the message says why and which checkpoint is the last good one."""


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


class Trainer:
    """Runs a `TrainConfig` with any `Policy` and rewards. Build it, then call `fit()`."""

    def __init__(self, cfg: TrainConfig, policy: Any = None, rewards: list | None = None, accelerator: Any = None):
        from accelerate import Accelerator

        self.cfg = cfg
        self.acc = accelerator or Accelerator(cpu=not torch.cuda.is_available(),
                                              mixed_precision=cfg.mixed_precision)
        self.rank, self.world = self.acc.process_index, self.acc.num_processes
        self.is_main = self.acc.is_main_process
        self.run_dir = Path(cfg.run_dir)
        torch.manual_seed(cfg.seed)                       # same init on every rank
        self.policy = policy if policy is not None else components.build(
            components.POLICIES, cfg.policy, "policy", device=self.acc.device)
        self.rewards = rewards if rewards is not None else self._build_rewards()
        self.prompts = load_prompts(cfg.data.prompts, cfg.data.prompts_file, "data.prompts")
        self.eval_prompts = load_prompts(cfg.data.eval_prompts, cfg.data.eval_prompts_file, "data.eval_prompts")
        self.sampler = GroupSampler(self.prompts, cfg.data.group_size, cfg.batch_size, cfg.seed,
                                    self.rank, self.world)
        self.n_local = cfg.batch_size // self.world
        self.micro = cfg.micro_batch_size or self.n_local
        per_opt = self.micro * cfg.grad_accum
        if self.n_local % per_opt:
            raise ConfigError(
                f"micro_batch_size={self.micro} x grad_accum={cfg.grad_accum} = {per_opt} samples per optimizer "
                f"step must divide the {self.n_local} samples each process holds (batch_size={cfg.batch_size} over "
                f"{self.world} processes)")
        self.params = [p for p in self.policy.trainable_parameters() if p.requires_grad]
        if not self.params:
            raise ConfigError("policy: has no trainable parameters (check its LoRA / freezing settings)")
        o = cfg.optim
        self.optimizer = torch.optim.AdamW(self.params, lr=o.lr, betas=tuple(o.betas), eps=o.eps,
                                           weight_decay=o.weight_decay)
        opt_steps = cfg.steps * cfg.inner_epochs * (self.n_local // per_opt)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_lambda(opt_steps))
        self.ema = [p.detach().clone() for p in self.params] if o.ema_decay else None
        self.objective = objectives.get(cfg.loss.objective)
        # A registered estimator may be a class (stateful methods, e.g. a value tracker): built once with
        # its params; its state_dict() is saved in checkpoints.
        est = adv_mod.get(cfg.advantage.name)
        self.estimator, self.adv_params = (est(**cfg.advantage.params), {}) if isinstance(est, type) \
            else (est, dict(cfg.advantage.params))
        sampling = dict(cfg.sampling)
        col = collect.get(sampling.pop("name"))
        self.collector, self.collect_params = (col(**sampling), {}) if isinstance(col, type) else (col, sampling)
        self.kl_fn = kl.get(cfg.loss.kl_estimator)
        self.step = 0
        self.writer = None
        self._metrics_lines = 0

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

    # ------------------------------------------------------------------ distributed helpers
    def _all_sum(self, values: list[float]) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self.acc.device)
        if self.world > 1:
            torch.distributed.all_reduce(t)
        return t.tolist()

    def _gather(self, t: Tensor) -> Tensor:
        if self.world == 1:
            return t
        return self.acc.gather(t.to(self.acc.device)).cpu()

    def _all_reduce_grads(self) -> None:
        if self.world == 1:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        torch.distributed.all_reduce(flat)
        offset = 0
        for p, g in zip(self.params, grads):
            n = g.numel()
            p.grad = flat[offset: offset + n].view_as(p).clone()
            offset += n

    # ------------------------------------------------------------------ rewards and advantages
    def _score(self, rollout: Rollout) -> Tensor:
        """Raw rewards [n, K] of this rank's samples (NaN = not applicable)."""
        cols = []
        for _, fn, _ in self.rewards:
            outputs, conds, gids = rollout.outputs, rollout.conds, rollout.group_ids
            if getattr(fn, "groupwise", False) and self.world > 1:
                from accelerate.utils import gather_object
                all_out = gather_object([rollout.outputs])
                outputs = torch.cat(all_out) if isinstance(all_out[0], Tensor) else [x for o in all_out for x in o]
                conds = gather_object(list(rollout.conds))
                gids = self._gather(rollout.group_ids)
                scores = call_reward(fn, outputs, conds, gids)
                scores = scores[self.rank * self.n_local:(self.rank + 1) * self.n_local]
            else:
                scores = call_reward(fn, outputs, conds, gids)
            cols.append(scores)
        return torch.stack(cols, 1)

    def _estimator_context(self, rollout: Rollout, step: int) -> dict:
        """Gathered rollout fields (all ranks) that the estimator asks for by name."""
        ctx: dict[str, Any] = {"step": step, "total_steps": self.cfg.steps}
        for name in context.wanted(self.estimator):
            if name in ctx:
                continue
            if name == "conds":
                if self.world > 1:
                    from accelerate.utils import gather_object
                    ctx[name] = gather_object(list(rollout.conds))
                else:
                    ctx[name] = list(rollout.conds)
                continue
            value = context.rollout_field(rollout, name)
            if value is None:
                raise ConfigError(f"advantage {self.cfg.advantage.name!r} needs rollout field {name!r}, "
                                  "which this policy did not fill")
            if self.world > 1:
                from accelerate.utils import pad_across_processes
                value = self._gather(pad_across_processes(value.to(self.acc.device), dim=1 if value.dim() > 1 else 0))
            ctx[name] = value
        return ctx

    def _advantages(self, raw: Tensor, group_ids: Tensor, kl_seq: Tensor | None,
                    ctx: dict | None = None) -> tuple[Tensor, Tensor, dict]:
        """Gather rewards, combine, normalize within groups; returns local (adv [n] or [n,T], valid [n], metrics)."""
        cfg = self.cfg
        ctx = ctx or {}
        all_raw = self._gather(raw)                                        # [N, K]
        all_gid = self._gather(group_ids)                                  # [N]
        weights = torch.tensor([w for _, _, w in self.rewards], dtype=torch.float32)
        metrics: dict[str, float] = {}
        finite = torch.isfinite(all_raw)
        for k, (name, _, _) in enumerate(self.rewards):
            col = all_raw[:, k][finite[:, k]]
            metrics[f"reward/{name}/mean"] = col.mean().item() if col.numel() else float("nan")
        if cfg.advantage.reward_mode == "weighted_sum":
            total = (all_raw * weights).sum(1)                             # NaN if any member is NaN
        else:
            total = torch.where(finite, all_raw, torch.zeros_like(all_raw)).mul(weights).sum(1)
            total[~finite.any(1)] = float("nan")
        if kl_seq is not None:
            total = total - cfg.loss.kl_beta * self._gather(kl_seq)
        valid = torch.isfinite(total)
        metrics["reward/nonfinite_count"] = float((~valid).sum())
        r = total[valid]
        metrics["reward/mean"] = r.mean().item() if r.numel() else float("nan")
        metrics["reward/std"] = r.std(unbiased=False).item() if r.numel() > 1 else 0.0
        adv = torch.zeros_like(total)
        if valid.any():
            if cfg.advantage.reward_mode == "normalize_then_sum" and len(self.rewards) > 1:
                adv[valid] = adv_mod.normalize_then_sum(all_raw[valid], all_gid[valid], weights)
            else:
                if "raw_rewards" in context.accepted(self.estimator):       # per-reward columns [N, K]
                    ctx = dict(ctx, raw_rewards=all_raw)
                sub = {k: (v[valid] if isinstance(v, Tensor) and v.shape[:1] == valid.shape else
                           [x for x, ok in zip(v, valid.tolist()) if ok] if isinstance(v, list) else v)
                       for k, v in ctx.items()}
                params = schedules.resolve(self.adv_params, ctx.get("step", 0), cfg.steps, "advantage.params")
                out = context.call(self.estimator, total[valid], all_gid[valid], params=params, context=sub)
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
        self.last_advantages = adv                                          # whole batch, for inspection
        sl = slice(self.rank * self.n_local, (self.rank + 1) * self.n_local)
        self._group_reward_std = group_std[sl]                              # objectives may ask for it (ETR)
        return adv[sl], valid[sl], metrics

    # ------------------------------------------------------------------ KL to the reference
    def _reference_kl(self, mb: Rollout, pos: slice, logp: Tensor) -> Tensor:
        if hasattr(self.policy, "reference_kl"):
            return self.policy.reference_kl(mb, pos)
        if hasattr(self.policy, "ref_log_prob"):
            with torch.no_grad():
                ref = self.policy.ref_log_prob(mb, pos)
            return self.kl_fn(logp, ref)
        raise ConfigError("loss.kl_beta > 0 but the policy has neither reference_kl nor ref_log_prob")

    def _sequence_kl(self, rollout: Rollout) -> Tensor:
        """Masked mean KL per sample [n] at sampling time (for kl_in_reward)."""
        with torch.no_grad():
            full = slice(0, rollout.num_positions)
            k = self._reference_kl(rollout, full, rollout.log_probs.to(self.acc.device)).float().cpu()
        m = rollout.mask.float()
        return (k * m).sum(1) / m.sum(1).clamp(min=1)

    # ------------------------------------------------------------------ one step
    def _time_chunks(self, t: int) -> list[slice]:
        c = getattr(self.policy, "time_chunk", None) or t
        return [slice(i, min(i + c, t)) for i in range(0, t, c)]

    def _autocast(self):
        return self.acc.autocast() if self.cfg.mixed_precision != "no" else contextlib.nullcontext()

    def train_step(self, step: int) -> dict:
        cfg = self.cfg
        timings = {}
        t0 = time.perf_counter()
        batch = self.sampler.local_batch(step)
        self._mode("eval")
        score_time = [0.0]

        def sample(b):
            with torch.no_grad(), self._autocast():
                return self.policy.sample(b)

        def score(r):
            t = time.perf_counter()
            out = self._score(r)
            score_time[0] += time.perf_counter() - t
            return out

        cctx = collect.CollectContext(step=step, batch=batch, sample=sample, score=score, sampler=self.sampler,
                                      gather=self._gather, all_sum=self._all_sum, rank=self.rank,
                                      world_size=self.world, policy=self.policy,
                                      reward_weights=[w for _, _, w in self.rewards], total_steps=cfg.steps)
        rollout, raw = context.call(self.collector, cctx, params=schedules.resolve(
            self.collect_params, step, cfg.steps, "sampling"))
        self.n_local = len(rollout)
        timings["time/sample"] = time.perf_counter() - t0 - score_time[0]
        t1 = time.perf_counter()
        kl_seq = self._sequence_kl(rollout) if cfg.loss.kl_beta > 0 and cfg.loss.kl_in_reward else None
        adv, valid, metrics = self._advantages(raw, rollout.group_ids, kl_seq, self._estimator_context(rollout, step))
        timings["time/reward"] = time.perf_counter() - t1 + score_time[0]
        t2 = time.perf_counter()
        self._mode("train")
        mask = rollout.mask & valid.unsqueeze(1)                           # [n, T]
        stats: dict = {}
        per_opt = self.micro * cfg.grad_accum
        obj_params = schedules.resolve(cfg.loss.objective_params, step, cfg.steps, "loss.objective_params")
        for epoch in range(cfg.inner_epochs):
            order = torch.arange(self.n_local)
            if cfg.shuffle_minibatches:
                from .groups import derive_seed
                g = torch.Generator().manual_seed(derive_seed(cfg.seed, step, epoch, self.rank, 3))
                order = order[torch.randperm(self.n_local, generator=g)]
            for start in range(0, self.n_local, per_opt):
                self._optimizer_step(rollout, adv, mask, order[start:start + per_opt], stats, obj_params, step)
        timings["time/train"] = time.perf_counter() - t2
        metrics.update(_finish_stats(stats))
        metrics.update(timings)
        metrics["lr"] = self.scheduler.get_last_lr()[0]
        metrics["step"] = step
        self._last_rollout, self._last_rewards = rollout, raw
        return metrics

    def _optimizer_step(self, rollout: Rollout, adv: Tensor, mask: Tensor, idx: Tensor, stats: dict,
                        obj_params: dict, step: int) -> None:
        cfg = self.cfg
        obj_wants = context.wanted(self.objective)
        m_all = mask[idx]
        counts = self._all_sum([float((m_all.sum(1) > 0).sum()), float(m_all.sum()), float(len(idx))])
        if counts[1] == 0:          # every group of this minibatch was masked: no signal, no Adam step
            _sum_stats(stats, {"skipped_updates": 1.0})
            with warnings.catch_warnings():   # the schedule follows training progress, not the update count
                warnings.simplefilter("ignore", UserWarning)
                self.scheduler.step()
            return
        ctx = {"num_seqs": counts[0], "num_tokens": counts[1], "num_samples": counts[2],
               "advantages": adv[idx]}
        step_counts = getattr(aggregation.get(cfg.loss.aggregation), "step_counts", None)
        if step_counts is not None:          # mode-specific normalizers of the whole optimizer step (all ranks)
            ctx["step_counts"] = self._all_sum(step_counts(m_all, adv[idx]))
        agg = cfg.loss.aggregation
        agg_params = schedules.resolve(cfg.loss.aggregation_params, step, cfg.steps, "loss.aggregation_params")
        accepted = inspect.signature(aggregation.get(agg)).parameters
        beta_loss = cfg.loss.kl_beta if not cfg.loss.kl_in_reward else 0.0
        for ms in range(0, len(idx), self.micro):
            sub = idx[ms: ms + self.micro]
            m = mask[sub]
            if not m.any():
                continue
            mb = rollout.select(sub)
            a = adv[sub].to(self.acc.device)
            ctx_mb = dict(ctx, advantages=a)
            w = aggregation.get(agg)(m, **{k: v for k, v in {**ctx_mb, **agg_params}.items() if k in accepted})
            chunks = self._time_chunks(mb.num_positions)
            if len(chunks) > 1 and getattr(self.objective, "needs_full_sequence", False):
                raise ConfigError(f"loss.objective {cfg.loss.objective!r} forms a sequence-level ratio and needs all "
                                  f"positions in one pass; set the policy's time_chunk to null (it is "
                                  f"{self.policy.time_chunk})")
            for pos in chunks:
                mp = m[:, pos].to(self.acc.device)
                if not mp.any():
                    continue
                with self._autocast():
                    logp = self.policy.log_prob(mb, pos).float()          # [n, c]
                old = mb.log_probs[:, pos].to(logp.device).float()
                a_pos = a if a.dim() == 1 else a[:, pos]
                octx = {"step": step, "total_steps": cfg.steps, "positions": pos}
                if "group_reward_std" in context.accepted(self.objective):     # ETR's macro elasticity
                    octx["group_reward_std"] = self._group_reward_std[sub].to(logp.device)
                for name in obj_wants & set(context.ROLLOUT_FIELDS):
                    value = context.rollout_field(mb, name)
                    if value is None:
                        raise ConfigError(f"loss.objective {cfg.loss.objective!r} needs rollout field {name!r}, "
                                          "which this policy did not fill")
                    octx[name] = value[:, pos].to(logp.device) if value.dim() == 2 else value.to(logp.device)
                loss_pt, st = context.call(self.objective, logp, old, a_pos, mp, params=obj_params, context=octx)
                if beta_loss > 0:
                    with self._autocast():
                        kl_pt = self._reference_kl(mb, pos, logp).float()
                    loss_pt = loss_pt + beta_loss * kl_pt
                    st["kl_ref"] = kl_pt.detach()[mp].mean().item()
                loss = torch.where(mp, loss_pt * w[:, pos].to(loss_pt.device), torch.zeros_like(loss_pt)).sum()
                if not torch.isfinite(loss):
                    raise TrainingError(f"non-finite loss ({loss.item()}) at step {self.step}")
                loss.backward()
                with torch.no_grad():
                    d = (logp - old)[mp]
                    st["approx_kl"] = (0.5 * d.pow(2)).mean().item()
                    st["loss"] = loss.item()
                _sum_stats(stats, st)
        self._all_reduce_grads()
        if cfg.optim.grad_clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.optim.grad_clip)
        else:
            norm = torch.sqrt(sum((p.grad.float() ** 2).sum() for p in self.params if p.grad is not None))
        _sum_stats(stats, {"grad_norm": float(norm)})
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if self.ema is not None:
            d = cfg.optim.ema_decay
            with torch.no_grad():
                for e, p in zip(self.ema, self.params):
                    e.mul_(d).add_(p.detach(), alpha=1 - d)

    def _mode(self, mode: str) -> None:
        fn = getattr(self.policy, mode, None)
        if callable(fn):
            fn()

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
        self._mode("eval")
        # policies with a separate evaluation sampler (flows: more ODE steps, no noise) take `evaluate=True`
        kw = {"evaluate": True} if "evaluate" in context.accepted(self.policy.sample) else {}
        with torch.no_grad(), self.ema_weights(), self._autocast():
            rollout = self.policy.sample(batch, **kw)
        raw = self._score(rollout)
        out = {}
        if self.world > 1:
            from accelerate.utils import gather_object
            raw = torch.cat(gather_object([raw]))
        for k, (name, _, _) in enumerate(self.rewards):
            col = raw[:, k][torch.isfinite(raw[:, k])]
            out[f"eval/{name}"] = col.mean().item() if col.numel() else float("nan")
        if save_prefix is not None and self.is_main:
            self._save_outputs(save_prefix, rollout, raw[: len(rollout)].nan_to_num(0).sum(1))
        return out

    def _save_outputs(self, prefix: Path, rollout: Rollout, scores: Tensor) -> None:
        saver = getattr(self.policy, "save_samples", None)
        if callable(saver):
            saver(prefix, rollout, scores)
        else:
            save_outputs(prefix, rollout.outputs, rollout.conds, scores)

    # ------------------------------------------------------------------ run directory
    def _trainable_state(self) -> dict[str, Tensor]:
        fn = getattr(self.policy, "state_dict_trainable", None)
        if callable(fn):
            return fn()
        return {f"param_{i:04d}": p for i, p in enumerate(self.params)}

    def _load_trainable_state(self, sd: dict[str, Tensor]) -> None:
        fn = getattr(self.policy, "load_state_dict_trainable", None)
        if callable(fn):
            fn(sd)
            return
        with torch.no_grad():
            for i, p in enumerate(self.params):
                p.copy_(sd[f"param_{i:04d}"])

    def save_checkpoint(self) -> Path | None:
        """Stage every file in a hidden folder, then rename it into place: a kill never leaves half a checkpoint."""
        staged = checkpoint.staging_dir(self.run_dir, self.step)
        if self.is_main:
            staged.mkdir(parents=True, exist_ok=True)
        self.acc.wait_for_everyone()
        torch.save(checkpoint.rng_state(), staged / f"rng_rank{self.rank}.pt")
        final = None
        if self.is_main:
            checkpoint.save_tensors(staged / "policy.safetensors", self._trainable_state())
            if self.ema is not None:
                checkpoint.save_tensors(staged / "ema.safetensors", {f"ema_{i:04d}": e for i, e in enumerate(self.ema)})
            torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()},
                       staged / "optimizer.pt")
            methods = {k: obj.state_dict() for k, obj in (("estimator", self.estimator), ("collector", self.collector))
                       if callable(getattr(obj, "state_dict", None))}
            if methods:
                torch.save(methods, staged / "methods.pt")
            exporter = getattr(self.policy, "save_pretrained", None)
            if callable(exporter):
                exporter(staged / "export")
            (staged / "trainer_state.json").write_text(json.dumps(
                {"step": self.step, "metrics_lines": self._metrics_lines, "world_size": self.world}))
        self.acc.wait_for_everyone()
        if self.is_main:
            final = checkpoint.publish(self.run_dir, self.step, self.cfg.keep_checkpoints)
        self.acc.wait_for_everyone()
        return final

    def load_checkpoint(self, path: Path) -> None:
        state = checkpoint.read_json(path / "trainer_state.json")
        self._load_trainable_state(checkpoint.load_tensors(path / "policy.safetensors"))
        if self.ema is not None and (path / "ema.safetensors").exists():
            ema = checkpoint.load_tensors(path / "ema.safetensors")
            self.ema = [ema[f"ema_{i:04d}"].to(p.device) for i, p in enumerate(self.params)]
        opt = torch.load(path / "optimizer.pt", weights_only=True)
        self.optimizer.load_state_dict(opt["optimizer"])
        self.scheduler.load_state_dict(opt["scheduler"])
        if (path / "methods.pt").exists():
            methods = torch.load(path / "methods.pt", weights_only=False)
            for k, obj in (("estimator", self.estimator), ("collector", self.collector)):
                if k in methods:
                    obj.load_state_dict(methods[k])
        rng = path / f"rng_rank{self.rank}.pt"
        if rng.exists():
            checkpoint.set_rng_state(torch.load(rng, weights_only=False))
        self.step = state["step"]
        self._metrics_lines = state["metrics_lines"]
        if self.is_main:
            checkpoint.truncate_jsonl(self.run_dir / "metrics.jsonl", self._metrics_lines)

    def _log(self, metrics: dict) -> None:
        if not self.is_main:
            return
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps({k: v for k, v in metrics.items()}) + "\n")
        self._metrics_lines += 1
        if self.writer is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)) and k != "step" and math.isfinite(v):
                    self.writer.add_scalar(k, v, metrics.get("step", self.step))

    def _open_run_dir(self, resume: bool) -> None:
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            import yaml
            checkpoint.atomic_write_text(self.run_dir / "config.yaml",
                                         yaml.safe_dump(to_dict(self.cfg), sort_keys=False))
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
            ckpt = checkpoint.latest_checkpoint(self.run_dir)
            if ckpt is None:
                raise TrainingError(f"--resume: no checkpoint under {self.run_dir / 'checkpoints'}; start without --resume")
            self.load_checkpoint(ckpt)
        if self.is_main and self.cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=self.step + 1 if resume else None)
            except ImportError:
                self.writer = None

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
                    self._save_outputs(self.run_dir / "samples" / f"step_{self.step:06d}",
                                       self._last_rollout, self._last_rewards.nan_to_num(0).sum(1))
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
            if self.writer is not None:
                self.writer.flush()
        if self.eval_prompts:
            summary["eval_after"] = self.evaluate(save_prefix=self.run_dir / "samples" / "eval_after")
            self._log({"step": self.step, **summary["eval_after"]})
        summary["reward_history"] = history["reward/mean"]
        summary["checkpoint"] = str(last_ckpt) if last_ckpt else None
        if self.is_main:
            from .plot import plot_run
            try:
                summary["plot"] = str(plot_run(self.run_dir))
            except Exception as exc:  # noqa: BLE001 - a plot must never lose a finished run
                summary["plot_error"] = str(exc)
        return summary
