"""`mmgrpo serve-reward` (serve a reward over HTTP) and `mmgrpo reward` (score files and print a table).

    mmgrpo serve-reward NAME [--host 127.0.0.1] [--port 8765] [--token T] [--param k=v ...]
                             [--device cpu] [--max-batch 64] [--max-wait-ms 5] [--max-payload-mb 64]
                             [--max-pixels N] [--max-audio-samples N] [--max-connections 32]
                             [--request-timeout 30] [--verbose] [--debug]
    mmgrpo reward NAME (--images DIR | --audio DIR | --text FILE) [--prompts FILE] [--param k=v ...]
                       [--device cpu] [--json] [--debug]

NAME is a registered reward (`mmgrpo.components.REWARDS`, the `mmgrpo.rewards` entry-point group) or an
allow-listed `package.module:Class` path; `--param k=v` values are parsed as YAML (`0.5`, `true`,
`[1, 2]`, strings as they are) and checked against the reward's `Config`. The server itself lives in
`server.py` (`serve_main` here only forwards to it, so the two modules do not import each other).

Input files for `mmgrpo reward`: `--images DIR` reads *.png/*.jpg/*.jpeg/*.webp/*.bmp sorted by name;
`--audio DIR` reads *.wav sorted by name (its sample rates become the `sample_rate` metadata);
`--text FILE` reads one completion per line, or a .jsonl whose lines are JSON strings or objects with
`completion`. `--prompts FILE` gives the conditions: one prompt per line, or a .jsonl of strings or
mappings (`{"prompt": ..., "answer": ...}`: ground truth travels in the conds); one line applies to all.

Failures are one line on stderr naming the file or option: exit code 2 for bad input (a missing, empty,
unreadable or non-UTF-8 file, a bad `--param`), 1 when the reward fails on valid input; `--debug` shows
the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from .spec import build_reward, parse_params

__all__ = ["build_reward", "parse_params", "serve_main", "score_main", "load_images", "load_audio", "load_texts"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


class InputError(ValueError):
    """A bad input file or option of `mmgrpo reward` (exit code 2)."""


def serve_main(argv: list[str]) -> int:
    """`mmgrpo serve-reward` (see `server.serve_main`)."""
    from .server import serve_main as main

    return main(argv)


def _read_text(path: Path, what: str) -> str:
    if not path.is_file():
        raise InputError(f"{what} file {str(path)!r} does not exist")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{what} file {str(path)!r} is not UTF-8 text (byte {exc.start}: {exc.reason}); "
                         "save it as UTF-8") from None


def _read_lines(path: Path, what: str) -> list[Any]:
    lines = [ln for ln in _read_text(path, what).splitlines() if ln.strip()]
    if not lines:
        raise InputError(f"{what} file {str(path)!r} is empty; give one entry per line")
    if path.suffix != ".jsonl":
        return lines
    out = []
    for i, ln in enumerate(lines, start=1):
        try:
            out.append(json.loads(ln))
        except (ValueError, RecursionError) as exc:
            raise InputError(f"{what} {path}:{i}: not JSON ({exc})") from None
    return out


def load_images(folder: Path) -> tuple[list[str], Any]:
    """Image files of `folder` -> (names, float [N,3,H,W] in [0,1], or a list of [3,H,W] if sizes differ)."""
    import numpy as np
    import torch
    from PIL import Image

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
    if not files:
        raise InputError(f"--images {str(folder)!r}: no {'/'.join(IMAGE_SUFFIXES)} files found")
    images = []
    for f in files:
        try:
            with Image.open(f) as img:
                rgb = np.array(img.convert("RGB"), dtype=np.uint8)              # [H, W, 3]
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise InputError(f"--images: cannot read {str(f)!r} ({type(exc).__name__}: {exc})") from None
        images.append(torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0)
    same = len({tuple(x.shape) for x in images}) == 1
    return [f.name for f in files], torch.stack(images) if same else images


def load_audio(folder: Path) -> tuple[list[str], list, list[int]]:
    """*.wav files of `folder` -> (names, mono float32 waveforms, sample rates)."""
    from .payload import PayloadError, read_wav

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".wav") if folder.is_dir() else []
    if not files:
        raise InputError(f"--audio {str(folder)!r}: no .wav files found")
    waves, rates = [], []
    for f in files:
        try:
            wave, rate = read_wav(f.read_bytes(), str(f))
        except (PayloadError, OSError) as exc:
            raise InputError(f"--audio: cannot read {str(f)!r} ({exc})") from None
        waves.append(wave)
        rates.append(rate)
    return [f.name for f in files], waves, rates


def load_texts(path: Path) -> list[str]:
    items = _read_lines(path, "--text")
    out = []
    for i, item in enumerate(items):
        if isinstance(item, dict):
            item = item.get("completion", item.get("text"))
        if not isinstance(item, str):
            raise InputError(f"--text {str(path)!r} line {i + 1}: expected a string or {{'completion': ...}}")
        out.append(item)
    return out


def _score_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mmgrpo reward", description="Score files with a reward, print a table.")
    p.add_argument("name", help="registered reward name or package.module:Class")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", type=Path, help="folder of images")
    src.add_argument("--audio", type=Path, help="folder of .wav files")
    src.add_argument("--text", type=Path, help="completions: .txt (one per line) or .jsonl")
    p.add_argument("--prompts", type=Path, help="conditions: .txt (one per line) or .jsonl")
    p.add_argument("--param", action="append", default=[], metavar="K=V", help="reward config field")
    p.add_argument("--device", default=None, help="device for the reward model")
    p.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    p.add_argument("--debug", action="store_true", help="show the traceback of a failure")
    return p


def score_main(argv: list[str]) -> int:
    """`mmgrpo reward`: score files and print `index  item  score` (NaN shown as n/a) and the mean.

    Exit codes: 0 scored, 2 bad input (files, options, reward name or params), 1 the reward failed."""
    args = _score_parser().parse_args(argv)
    try:
        names, values, reward = _score(args)
    except (ValueError, KeyError, ImportError, OSError) as exc:  # InputError, a bad --param or reward name
        if args.debug:
            raise
        print(f"mmgrpo reward: {_one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - RewardError and anything else the run raised
        if args.debug:
            raise
        print(f"mmgrpo reward: scoring failed: {_one_line(exc)} (--debug shows the traceback)", file=sys.stderr)
        return 1
    if args.json:
        for i, (name, v) in enumerate(zip(names, values)):
            print(json.dumps({"index": i, "item": name, "score": None if math.isnan(v) else v}))
        return 0
    width = max(4, *(len(x) for x in names))
    print(f"{'#':>4}  {'item':<{width}}  score")
    for i, (name, v) in enumerate(zip(names, values)):
        print(f"{i:>4}  {name:<{width}}  {'n/a' if math.isnan(v) else f'{v:.4f}'}")
    valid = [v for v in values if not math.isnan(v)]
    mean = f"{sum(valid) / len(valid):.4f}" if valid else "n/a"
    print(f"mean {mean} over {len(valid)} of {len(names)} scored ({getattr(reward, 'name', args.name)})")
    return 0


def _score(args: argparse.Namespace) -> tuple[list[str], list[float], Any]:
    """Read the inputs, build the reward, score: (item names, scores, reward). Bad input raises ValueError."""
    import torch

    from mmgrpo.reward import call_reward

    metadata: dict[str, Any] = {}
    if args.images is not None:
        names, outputs = load_images(args.images)
    elif args.audio is not None:
        names, outputs, rates = load_audio(args.audio)
        metadata["sample_rate"] = rates[0] if len(set(rates)) == 1 else rates
    else:
        outputs = load_texts(args.text)
        names = [t if len(t) <= 40 else t[:37] + "..." for t in (" ".join(o.split()) for o in outputs)]
    n = len(names)
    conds: list[Any] = _read_lines(args.prompts, "--prompts") if args.prompts else [""]
    if len(conds) == 1:
        conds = conds * n
    if len(conds) != n:
        raise InputError(f"--prompts has {len(conds)} entries for {n} outputs (give {n}, or one for all)")
    reward = build_reward(args.name, parse_params(args.param), args.device)
    scores = call_reward(reward, outputs, conds, torch.arange(n), **metadata)  # raises only RewardError
    return names, [float(s) for s in scores], reward


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 500 else text[:497] + "..."
