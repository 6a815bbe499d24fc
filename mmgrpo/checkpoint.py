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


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """This process's RNG states as (tensors for safetensors, JSON-able values): no pickle."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, st in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda_{i}"] = st
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    tensors["numpy_keys"] = torch.from_numpy(np.asarray(keys, dtype=np.uint32).astype(np.int64))
    version, internal, gauss_next = random.getstate()
    meta = {"numpy": [kind, int(pos), int(has_gauss), float(gauss)],
            "python": [version, list(internal), gauss_next]}
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch"])
    if torch.cuda.is_available():
        cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda_"))]
        if cuda:
            torch.cuda.set_rng_state_all(cuda)
    kind, pos, has_gauss, gauss = meta["numpy"]
    np.random.set_state((kind, tensors["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = meta["python"]
    random.setstate((version, tuple(internal), gauss_next))


def save_rng(staged: Path, rank: int) -> None:
    tensors, meta = rng_state()
    save_tensors(staged / f"rng_rank{rank}.safetensors", tensors)
    (staged / f"rng_rank{rank}.json").write_text(json.dumps(meta))


def load_rng(path: Path, rank: int) -> bool:
    """Restore this rank's RNG from a checkpoint; False when the checkpoint has none for this rank."""
    t, m = path / f"rng_rank{rank}.safetensors", path / f"rng_rank{rank}.json"
    if not (t.exists() and m.exists()):
        return False
    set_rng_state(load_tensors(t), read_json(m))
    return True


# ------------------------------------------------------------------------------------------ optimizer state

def flatten_optimizer(state: dict, local) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """`optimizer.state_dict()` -> (tensors named state.<param>.<key>, JSON: param_groups and scalars).

    `local` maps a (possibly sharded) state tensor to this rank's part of it."""
    tensors, scalars = {}, {}
    for pid, st in state["state"].items():
        for key, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{pid}.{key}"] = local(value).detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = value
    for name, value in meta.get("scalars", {}).items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


# ------------------------------------------------------------------------------------------ validation

class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated or not what it should be; the message names the file."""


def check_checkpoint(path: Path, rank: int = 0) -> None:
    """Raise CheckpointError naming the first file of `path` that is missing or unreadable."""
    state_file = path / "trainer_state.json"
    try:
        state = read_json(state_file)
        int(state["step"])
    except FileNotFoundError:
        raise CheckpointError(f"{state_file} is missing") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{state_file} is empty or not valid JSON ({exc})") from None
    names = ["policy.safetensors", *state.get("tensor_files", [])]
    for name in names:
        f = path / name.replace("{rank}", str(rank))
        try:
            if not f.exists():
                raise CheckpointError(f"{f} is missing")
            load_tensors(f)
        except CheckpointError:
            raise
        except Exception as exc:  # noqa: BLE001 - safetensors raises several kinds for a bad header
            raise CheckpointError(f"{f} is truncated or not a safetensors file ({exc})") from None
    for name in state.get("json_files", []):
        f = path / name.replace("{rank}", str(rank))
        try:
            read_json(f)
        except FileNotFoundError:
            raise CheckpointError(f"{f} is missing") from None
        except ValueError as exc:
            raise CheckpointError(f"{f} is empty or not valid JSON ({exc})") from None


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


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Published checkpoints, newest first (half-written staging folders are never listed)."""
    ckpts = run_dir / "checkpoints"
    return sorted((p for p in ckpts.glob("step_*") if p.is_dir()), reverse=True)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest published checkpoint that has its trainer_state.json (no content check; see `usable_checkpoint`)."""
    done = [p for p in complete_checkpoints(run_dir) if (p / "trainer_state.json").is_file()]
    return done[0] if done else None


def usable_checkpoint(run_dir: Path, rank: int = 0, warn=print, agree=None) -> Path | None:
    """The newest checkpoint whose files all read back; each newer broken one is named through `warn`.

    With several processes every rank must resume from the same one (each reads its own RNG and optimizer
    files): `agree(ok)` returns every rank's `ok` for the checkpoint at hand (a collective; all ranks walk
    the same list in the same order), and a checkpoint counts only when it reads back on all of them."""
    for p in complete_checkpoints(run_dir):
        try:
            check_checkpoint(p, rank)
            ok, why = True, ""
        except CheckpointError as exc:
            ok, why = False, str(exc)
        oks = agree(ok) if agree is not None else [ok]
        if all(oks):
            return p
        if not ok:
            warn(f"checkpoint {p.name} is unusable: {why}; trying the one before it")
        elif rank == 0:
            bad = [i for i, o in enumerate(oks) if not o]
            warn(f"checkpoint {p.name} is unusable on process(es) {bad} (their files are named in their output); "
                 "trying the one before it")
    return None


def remove_stale_staging(run_dir: Path) -> list[Path]:
    """Delete `.staging_step_*` folders a crashed run left (they would be published inside a new checkpoint)."""
    stale = sorted((run_dir / "checkpoints").glob(".staging_step_*"))
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return stale


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def truncate_jsonl(path: Path, keep_lines: int) -> None:
    """Keep the first `keep_lines` complete lines (drops records written after the checkpoint)."""
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = [ln for ln in lines[:keep_lines] if ln.endswith("\n")]
    atomic_write_text(path, "".join(kept))
