"""Memory per process of the tiny flow model's training step under DDP and FSDP2 (2 CPU processes each).

A wider tiny SD3 pipeline (real diffusers classes, random weights, built here and saved to a temporary
folder) trains a few GRPO steps with LoRA. Each process reports

- `transformer_param_bytes`: the engine-prepared transformer's parameters this rank holds (frozen base and
  LoRA; FSDP2 keeps a 1/N shard of each), `trainable_param_bytes`, `grad_bytes` (what `.grad` holds at the
  optimizer step: as large as the trainable parameters this rank holds) and `optimizer_state_bytes` (Adam's
  moments this rank holds);
- `step_peak_rss_mb`: the resident-set high-water mark over the training steps only (Linux: reset through
  /proc/self/clear_refs after building and freeing what preparation freed; elsewhere the lifetime
  `ru_maxrss`, which then also counts the model build), and `step_rss_growth_mb` above the RSS before them.

Variants: `ddp` (configs/accelerate/ddp_cpu.yaml), `fsdp2` (fsdp2_cpu.yaml: the whole transformer is one
FSDP unit, so a forward gathers all of it at once) and `fsdp2_per_block` (the same with
TRANSFORMER_BASED_WRAP: one unit per transformer block, as configs/accelerate/fsdp2.yaml does on GPUs).
Prints one JSON with the per-variant figures (rank 0 and rank 1) and FSDP2 / DDP ratios. By default glibc
is set so that RSS follows live memory (`--allocator tracking`, see ALLOCATOR_ENV below).

    python benchmarks/memory.py [--layers 32 --heads 4 --head-dim 64 --steps 1]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import resource
import sys
import tempfile
from pathlib import Path

import yaml
from _launch import free_port, pick_variants, run_json

ROOT = Path(__file__).resolve().parents[1]
FLOW = ROOT / "configs" / "flow" / "sd35m_shapes.yaml"
VARIANTS = ("ddp", "fsdp2", "fsdp2_per_block")


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    """Reset this process's RSS high-water mark (Linux); False where it cannot be reset."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _release_freed() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)      # hand freed heap pages back, so RSS shows what is held
    except (OSError, AttributeError):
        pass


def measure(a) -> dict | None:
    import torch

    from mmgrpo.config import load_config
    from mmgrpo.distributed import Collectives, local_tensor, make_accelerator
    from mmgrpo.trainer import Trainer

    run = [f"policy.pretrained={a.pipe}", "policy.dtype=float32", "policy.resolution=16",
           "policy.max_sequence_length=16", "policy.lora_rank=8", "policy.lora_alpha=16", "policy.num_steps=3",
           "policy.eval_num_steps=2", "policy.gradient_checkpointing=false", "batch_size=8", "data.group_size=4",
           "micro_batch_size=2", "grad_accum=2", f"steps={a.steps}", "mixed_precision=no",
           "advantage.zero_std=keep", "checkpoint_every=0", "data.eval_prompts_file=null", "progress=false",
           "tensorboard=false", "sample_every=0", "data.eval_prompts=[]"]
    acc = make_accelerator()
    with tempfile.TemporaryDirectory() as tmp:
        t = Trainer(load_config(FLOW, [*run, f"run_dir={tmp}"]), accelerator=acc)
        t._open_run_dir(resume=False)
        _release_freed()
        acc.wait_for_everyone()
        rss_before = _status_kb("VmRSS")
        reset = _reset_peak()
        for step in range(a.steps):
            t.train_step(step)
        peak = _status_kb("VmHWM") if reset else None
        if peak is None:                                  # lifetime high-water mark (KiB on Linux)
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

        def nbytes(tensors):
            return int(sum(local_tensor(x).numel() * x.element_size() for x in tensors))

        trainable = nbytes(t.params)
        moments = [v for st in t.optimizer.state_dict()["state"].values() for v in st.values()
                   if isinstance(v, torch.Tensor) and v.dim() > 0]
        mine = {
            "rank": acc.process_index, "engine": t.engine,
            "transformer_param_bytes": nbytes(list(t.model.parameters())),
            "trainable_param_bytes": trainable, "grad_bytes": trainable,
            "optimizer_state_bytes": nbytes(moments),
            "step_peak_rss_mb": peak / 1024, "step_rss_growth_mb": (peak - rss_before) / 1024 if reset else None,
            "rss_before_steps_mb": rss_before / 1024 if rss_before else None,
            "peak_reset_after_build": reset,
        }
        mine["held_bytes"] = (mine["transformer_param_bytes"] + mine["grad_bytes"] + mine["optimizer_state_bytes"])
    ranks = Collectives(acc).gather_object([mine])
    return {"engine": t.engine, "ranks": ranks} if acc.is_main_process else None


# glibc keeps freed heap pages, per thread arena, and gloo's threads allocate in arenas of their own: RSS
# then shows what an allocator kept rather than what a step held. Tensors of 64 KiB and more mapped and
# unmapped directly (and one arena) make RSS follow the live memory; every variant runs under the same setting.
ALLOCATOR_ENV = {"tracking": {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_ARENA_MAX": "1"}, "default": {}}


def run_variant(name: str, argv: list[str], tmp: Path, timeout: float, allocator: str = "tracking") -> dict:
    src = ROOT / "configs" / "accelerate" / ("ddp_cpu.yaml" if name == "ddp" else "fsdp2_cpu.yaml")
    config = src
    if name == "fsdp2_per_block":
        cfg = yaml.safe_load(src.read_text())
        cfg["fsdp_config"]["fsdp_auto_wrap_policy"] = "TRANSFORMER_BASED_WRAP"   # the model's _no_split_modules
        config = tmp / "fsdp2_per_block.yaml"
        config.write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
           "--main_process_port", str(free_port()), str(Path(__file__).resolve()), "--inner", *argv]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
               **ALLOCATOR_ENV[allocator])
    return run_json("memory", name, cmd, env, timeout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=32, help="transformer blocks of the tiny SD3 model")
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--steps", type=int, default=1, help="training steps measured")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ",".join(VARIANTS))
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per variant")
    ap.add_argument("--allocator", choices=sorted(ALLOCATOR_ENV), default="tracking",
                    help="tracking: glibc set so that RSS follows live memory (see ALLOCATOR_ENV); default: as is")
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--pipe", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.inner:
        out = measure(a)
        if out is not None:
            print(json.dumps(out), flush=True)
        return
    names = pick_variants("memory", a.variants, VARIANTS)
    from mmgrpo.modalities.flow.tiny import tiny_sd3_pipeline

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pipe = tiny_sd3_pipeline(seed=0, sample_size=8, num_layers=a.layers, heads=a.heads, head_dim=a.head_dim)
        n_params = sum(p.numel() for p in pipe.transformer.parameters())
        pipe.save_pretrained(tmp / "pipe")
        del pipe
        argv = ["--pipe", str(tmp / "pipe"), "--steps", str(a.steps)]
        results = {v: run_variant(v, argv, tmp, a.timeout, a.allocator) for v in names}
    report = {"benchmark": "memory", "model": f"tiny SD3 transformer: {a.layers} blocks x {a.heads} heads x "
              f"{a.head_dim} (base {n_params} parameters, fp32) + LoRA r=8", "processes": 2,
              "steps_measured": a.steps, "allocator": {a.allocator: ALLOCATOR_ENV[a.allocator]},
              "variants": results}
    if "ddp" in results:
        base = results["ddp"]["ranks"][0]
        report["vs_ddp_rank0"] = {
            v: {k: r["ranks"][0][k] / base[k] for k in ("held_bytes", "transformer_param_bytes", "optimizer_state_bytes",
                                                        "step_peak_rss_mb") if base.get(k)}
            for v, r in results.items() if v != "ddp"}
    report["load_average_1min"] = os.getloadavg()[0]
    report["goal"] = ("FSDP2 holds less per process than DDP: held_bytes and step_peak_rss_mb ratios < 1 (per block; "
                      "one unit for the whole model gathers all of it in each forward)")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
