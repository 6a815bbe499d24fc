"""Run-directory files written atomically: checkpoints (temp folder, then rename), JSON, metrics."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

LATEST = "latest"


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step_{step:07d}"


def staging_dir(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f".staging_step_{step:07d}"


def publish(run_dir: Path, step: int, keep: int) -> Path:
    """Rename the staged folder into place, point `latest` at it, prune old checkpoints."""
    final, staged = checkpoint_dir(run_dir, step), staging_dir(run_dir, step)
    if final.exists():
        shutil.rmtree(final)
    os.replace(staged, final)
    atomic_write_text(run_dir / "checkpoints" / LATEST, final.name + "\n")
    done = sorted(p for p in (run_dir / "checkpoints").glob("step_*") if p.is_dir() and p.name <= final.name)
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint (half-written staging folders are ignored)."""
    ckpts = run_dir / "checkpoints"
    pointer = ckpts / LATEST
    if pointer.is_file():
        p = ckpts / pointer.read_text().strip()
        if (p / "trainer_state.json").is_file():
            return p
    done = sorted(p for p in ckpts.glob("step_*") if (p / "trainer_state.json").is_file())
    return done[-1] if done else None


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def truncate_jsonl(path: Path, keep_lines: int) -> None:
    """Keep the first `keep_lines` complete lines (drops records written after the checkpoint)."""
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = [ln for ln in lines[:keep_lines] if ln.endswith("\n")]
    atomic_write_text(path, "".join(kept))
