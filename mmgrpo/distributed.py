"""The accelerate engine the trainer runs on, and the few collectives the core needs (through accelerate).

`make_accelerator` builds the `Accelerator` that `accelerate launch --config_file configs/accelerate/...`
asked for: DDP, FSDP2 or DeepSpeed on GPUs. accelerate only promotes a launch to FSDP on accelerator
devices; on CPU processes (gloo) it silently falls back to DDP. torch's FSDP2 (`fully_shard`) does run on
CPU with gloo, so when the launch asked for FSDP (`ACCELERATE_USE_FSDP=true`) and the processes are CPU
ones, the FSDP plugin is installed on accelerate's state and the rest is accelerate's own FSDP2 path
(`prepare`, `no_sync`, `clip_grad_norm_`, `get_state_dict`). This is what lets the one-rank == two-rank
tests run under FSDP2 on a laptop.

Under DeepSpeed the engine steps the optimizer inside `accelerator.backward` whenever accelerate's sync flag
is set; mmgrpo runs several backward passes per optimizer step (micro-batches x time chunks), so
`mark_step_boundary` sets the flag on the last pass only, and `configure_deepspeed` fills the config entries
accelerate would otherwise infer from a DataLoader (the trainer has none). ZeRO-1/2 keep full parameters on
every rank (EMA and checkpoints work as under DDP; the optimizer state is each rank's partition); ZeRO-3 is
refused with a message until EMA and checkpoints gather partitioned parameters.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor


def make_accelerator(mixed_precision: str = "no", log_with: list | None = None, project_dir: str | None = None):
    from accelerate import Accelerator
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    cpu = not torch.cuda.is_available()
    want_fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    kwargs: dict[str, Any] = dict(cpu=cpu, mixed_precision=mixed_precision, step_scheduler_with_optimizer=False,
                                  log_with=log_with or None, project_dir=project_dir)
    plugin = FullyShardedDataParallelPlugin() if (cpu and want_fsdp) else None
    if plugin is not None:
        kwargs["fsdp_plugin"] = plugin
    from accelerate.state import AcceleratorState

    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision", mixed_precision) != mixed_precision:
        # accelerate keeps one AcceleratorState per process; a second run in the same process (a notebook,
        # a test session) with another precision gets a fresh one (the process group, in PartialState, stays)
        AcceleratorState._reset_state(reset_partial_state=False)
    acc = Accelerator(**kwargs)
    if plugin is not None and acc.distributed_type == DistributedType.MULTI_CPU:
        from accelerate.state import PartialState

        acc.state.distributed_type = DistributedType.FSDP
        PartialState().distributed_type = DistributedType.FSDP
        acc.state.fsdp_plugin = plugin
    return acc


def configure_deepspeed(acc, micro_batch: int, grad_clip: float | None) -> None:
    """Before `prepare` under DeepSpeed: the micro-batch per GPU and the clipping norm (no-op on other engines)."""
    from accelerate.utils import DistributedType

    if acc.distributed_type != DistributedType.DEEPSPEED:
        return
    plugin = acc.state.deepspeed_plugin
    ds = plugin.deepspeed_config
    stage = ds.get("zero_optimization", {}).get("stage", 0)
    if stage == 3:
        raise ValueError("deepspeed_config.zero_stage=3 partitions parameters, which mmgrpo's EMA and checkpoints do not "
                         "gather yet; shard parameters with configs/accelerate/fsdp2.yaml, or use deepspeed_zero2.yaml")
    gas = ds.get("gradient_accumulation_steps", 1)
    if gas not in (1, "auto"):
        raise ValueError(f"deepspeed_config.gradient_accumulation_steps={gas}: must be 1 (mmgrpo marks where each "
                         "optimizer step ends itself; set micro_batch_size and grad_accum in the run config)")
    ds["gradient_accumulation_steps"] = 1
    if ds.get("train_micro_batch_size_per_gpu", "auto") == "auto":
        ds["train_micro_batch_size_per_gpu"] = int(micro_batch)
    if ds.get("gradient_clipping", "auto") == "auto":    # accelerate would fill 1.0; the run config decides
        ds["gradient_clipping"] = float(grad_clip) if grad_clip is not None else 0.0
        plugin.gradient_clipping = ds["gradient_clipping"]


def mark_step_boundary(acc, last: bool) -> None:
    """Under DeepSpeed: whether the coming `accelerator.backward` is the last of its optimizer step.

    accelerate's DeepSpeed wrapper sets the engine's accumulation boundary from its own sync flag and calls
    `engine.step()` after every backward; with the flag False on the earlier passes the engine only
    accumulates there, and steps (clip, Adam, scheduler) after the last."""
    acc.sync_gradients = last


def _is_deepspeed(acc) -> bool:
    from accelerate.utils import DistributedType

    return acc.distributed_type == DistributedType.DEEPSPEED


def checkpoint_optimizer(acc, optimizer):
    """The torch optimizer whose `state_dict` a checkpoint holds.

    The prepared optimizer itself on every engine but DeepSpeed; under ZeRO-1/2 the engine's base optimizer,
    which runs over this rank's flat fp32 partition (so each rank saves its own shard)."""
    if not _is_deepspeed(acc):
        return optimizer
    engine_opt = getattr(optimizer, "optimizer", optimizer)          # accelerate's wrapper -> DeepSpeed's
    base = getattr(engine_opt, "optimizer", None)
    return base if isinstance(base, torch.optim.Optimizer) else engine_opt


def weights_loaded(acc, optimizer) -> None:
    """After a checkpoint's weights were copied into the model: DeepSpeed's fp32 master partition follows them
    (otherwise the next engine step would overwrite them with the stale master copy)."""
    if not _is_deepspeed(acc):
        return
    engine_opt = getattr(optimizer, "optimizer", optimizer)
    refresh = getattr(engine_opt, "refresh_fp32_params", None)
    if refresh is not None:
        refresh()


def engine_name(acc) -> str:
    """'single', 'ddp', 'fsdp2', 'fsdp1' or 'deepspeed' (for logs, checkpoints and error messages)."""
    from accelerate.utils import DistributedType

    t = acc.distributed_type
    if t == DistributedType.FSDP:
        return "fsdp2" if acc.is_fsdp2 else "fsdp1"
    if t == DistributedType.DEEPSPEED:
        return "deepspeed"
    return "single" if acc.num_processes == 1 else "ddp"


class Collectives:
    """gather / all_sum / gather_object over the accelerator's processes (identity on one process)."""

    def __init__(self, acc):
        self.acc = acc
        self.rank, self.world = acc.process_index, acc.num_processes

    def gather(self, t: Tensor) -> Tensor:
        """Concatenate every rank's `t` along dim 0 (ranks may hold different lengths)."""
        if self.world == 1:
            return t
        from accelerate.utils import gather_object

        parts = gather_object([t.detach().cpu()])
        return torch.cat(parts)

    def gather_padded(self, t: Tensor) -> Tensor:
        """gather of [n, T] tensors whose T differs across ranks: padded with zeros to the largest T."""
        if self.world == 1:
            return t
        from accelerate.utils import gather_object

        parts = gather_object([t.detach().cpu()])
        if t.dim() > 1:
            width = max(p.shape[1] for p in parts)
            parts = [torch.nn.functional.pad(p, (0, width - p.shape[1])) for p in parts]
        return torch.cat(parts)

    def gather_object(self, items: list) -> list:
        if self.world == 1:
            return list(items)
        from accelerate.utils import gather_object

        return gather_object(list(items))

    def all_sum(self, values: list[float]) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self.acc.device)
        if self.world > 1:
            torch.distributed.all_reduce(t)
        return t.tolist()

    def local_slice(self, n_local: int) -> slice:
        """Where this rank's `n_local` samples sit in a gather (ranks may hold different counts)."""
        counts = [int(c) for c in self.gather_object([n_local])] if self.world > 1 else [n_local]
        start = sum(counts[: self.rank])
        return slice(start, start + n_local)


def full_tensor(t: Tensor) -> Tensor:
    """A full (unsharded) copy of a parameter or state tensor; a collective for FSDP2 DTensors."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def local_tensor(t: Tensor) -> Tensor:
    from torch.distributed.tensor import DTensor

    return t.to_local() if isinstance(t, DTensor) else t


def is_sharded(t: Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def shard_like(full: Tensor, like: Tensor) -> Tensor:
    """`full` laid out as `like` (a DTensor shard on this rank), or `full` itself for plain tensors."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if isinstance(like, DTensor):
        return distribute_tensor(full.to(like.dtype), like.device_mesh, like.placements).to_local()
    return full
