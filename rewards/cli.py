"""`mmgrpo serve-reward` (serve a reward over HTTP) and `mmgrpo reward` (score files and print a table).

    mmgrpo serve-reward NAME [--host 127.0.0.1] [--port 8765] [--token T] [--param k=v ...]
                             [--device cpu] [--max-batch 64] [--max-wait-ms 5] [--max-payload-mb 64]
    mmgrpo reward NAME (--images DIR | --audio DIR | --text FILE) [--prompts FILE] [--param k=v ...]
                       [--sample-rate HZ] [--device cpu] [--json]

NAME is a registered reward (`mmgrpo.components.REWARDS`, the `mmgrpo.rewards` entry-point group) or an
allow-listed `package.module:Class` path; `--param k=v` values are parsed as YAML (`0.5`, `true`,
`[1, 2]`, strings as they are) and checked against the reward's `Config`.

Input files for `mmgrpo reward`: `--images DIR` reads *.png/*.jpg/*.jpeg/*.webp/*.bmp sorted by name;
`--audio DIR` reads *.wav sorted by name (its sample rates become the `sample_rate` metadata);
`--text FILE` reads one completion per line, or a .jsonl whose lines are JSON strings or objects with
`completion`. `--prompts FILE` gives the conditions: one prompt per line, or a .jsonl of strings or
mappings (`{"prompt": ..., "answer": ...}`: ground truth travels in the conds); one line applies to all.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def parse_params(items: list[str]) -> dict[str, Any]:
    """`["k=v", ...]` -> `{k: yaml(v)}`; an item without `=` is an error naming it."""
    import yaml

    params: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--param {item!r} must look like key=value")
        try:
            params[key] = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError as exc:
            raise ValueError(f"--param {item!r}: value is not valid YAML ({exc})") from None
    return params


def build_reward(name: str, params: dict[str, Any], device: str | None = None) -> Any:
    """A reward by registry name or `module:Class` path, its `Config` validated from `params`."""
    from mmgrpo.components import REWARDS, build

    spec = {"_component_": name, **params} if ":" in name else {"name": name, **params}
    runtime = {"device": device} if device else {}
    return build(REWARDS, spec, f"reward {name!r}", **runtime)


def _server_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mmgrpo serve-reward", description="Serve a reward over HTTP.")
    p.add_argument("name", help="registered reward name or package.module:Class")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (non-loopback needs a token)")
    p.add_argument("--port", type=int, default=8765, help="port (0: any free port, printed at start)")
    p.add_argument("--token", default=None, help="bearer token required from clients (or env MMGRPO_REWARD_TOKEN)")
    p.add_argument("--param", action="append", default=[], metavar="K=V", help="reward config field")
    p.add_argument("--device", default=None, help="device for the reward model, e.g. cuda:0")
    p.add_argument("--max-batch", type=int, default=64, help="samples per micro-batched reward call")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="how long to wait for requests to batch")
    p.add_argument("--max-payload-mb", type=float, default=64.0, help="largest request body accepted")
    p.add_argument("--verbose", action="store_true", help="log every request")
    return p


def serve_main(argv: list[str]) -> int:
    """`mmgrpo serve-reward`: build the reward, serve it until interrupted. Prints the URL when ready."""
    from .server import TOKEN_ENV, RewardServer

    args = _server_parser().parse_args(argv)
    try:
        reward = build_reward(args.name, parse_params(args.param), args.device)
        server = RewardServer(reward, host=args.host, port=args.port,
                              token=args.token or os.environ.get(TOKEN_ENV) or None,
                              max_payload_bytes=int(args.max_payload_mb * 1024 * 1024), max_batch=args.max_batch,
                              max_wait_ms=args.max_wait_ms, verbose=args.verbose)
    except (ValueError, KeyError, ImportError, OSError) as exc:
        print(f"mmgrpo serve-reward: {exc}", file=sys.stderr)
        return 2
    print(f"serving reward {server.name!r} on {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()
    return 0


def _read_lines(path: Path, what: str) -> list[Any]:
    if not path.is_file():
        raise ValueError(f"{what} file {str(path)!r} does not exist")
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if path.suffix != ".jsonl":
        return lines
    out = []
    for i, ln in enumerate(lines, start=1):
        try:
            out.append(json.loads(ln))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{i}: not JSON ({exc})") from None
    return out


def load_images(folder: Path) -> tuple[list[str], Any]:
    """Image files of `folder` -> (names, float [N,3,H,W] in [0,1], or a list of [3,H,W] if sizes differ)."""
    import numpy as np
    import torch
    from PIL import Image

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
    if not files:
        raise ValueError(f"--images {str(folder)!r}: no {'/'.join(IMAGE_SUFFIXES)} files found")
    images = []
    for f in files:
        with Image.open(f) as img:
            images.append(torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.uint8).copy())
                          .permute(2, 0, 1).float() / 255.0)
    same = len({tuple(x.shape) for x in images}) == 1
    return [f.name for f in files], torch.stack(images) if same else images


def load_audio(folder: Path) -> tuple[list[str], list, list[int]]:
    """*.wav files of `folder` -> (names, mono float32 waveforms, sample rates)."""
    from .payload import read_wav

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".wav") if folder.is_dir() else []
    if not files:
        raise ValueError(f"--audio {str(folder)!r}: no .wav files found")
    waves, rates = [], []
    for f in files:
        wave, rate = read_wav(f.read_bytes(), str(f))
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
            raise ValueError(f"--text {str(path)!r} line {i + 1}: expected a string or {{'completion': ...}}")
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
    return p


def score_main(argv: list[str]) -> int:
    """`mmgrpo reward`: score files and print `index  item  score` (NaN shown as n/a) and the mean."""
    import torch

    from mmgrpo.reward import call_reward

    args = _score_parser().parse_args(argv)
    try:
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
            raise ValueError(f"--prompts has {len(conds)} entries for {n} outputs (give {n}, or one for all)")
        reward = build_reward(args.name, parse_params(args.param), args.device)
        scores = call_reward(reward, outputs, conds, torch.arange(n), **metadata)
    except (ValueError, KeyError, ImportError, OSError, RuntimeError) as exc:
        print(f"mmgrpo reward: {exc}", file=sys.stderr)
        return 2
    values = [float(s) for s in scores]
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
    print(f"mean {mean} over {len(valid)} of {n} scored ({getattr(reward, 'name', args.name)})")
    return 0
