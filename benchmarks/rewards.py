"""Reward throughput: samples/second of each audio/text reward's tiny instance, in process vs through the
local reward server (a real `python -m mmgrpo.rewards.server` process on 127.0.0.1), at batch 1, 8, 32.

    python benchmarks/rewards.py [--rewards answer_accuracy,asr_whisper] [--batches 1,8,32]
                                 [--min-time 0.5] [--out results.json]

Prints one JSON object: per reward and batch size, `in_process_sps`, `server_sps` (both samples/second,
median of `--repeats` timed windows of at least `--min-time` seconds) and `server_overhead_ms` (extra
milliseconds per batch: payload encoding, HTTP and decoding). Model rewards use tiny random checkpoints
(`mmgrpo.rewards.audio.tiny`, `mmgrpo.rewards.text.tiny`), so the numbers measure the reward plumbing,
not a production model's speed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch


def _noise(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(seed)) * 0.3


def _text_inputs(b: int) -> tuple[list, list, dict]:
    outs = [f"<think>add</think><answer>{i % 7}</answer>" for i in range(b)]
    return outs, [{"prompt": f"q{i}", "answer": str(i % 5)} for i in range(b)], {}


def _grounding_inputs(b: int) -> tuple[list, list, dict]:
    outs = [f"<answer>from {i % 4}.5 to {i % 4 + 3}.0 seconds</answer>" for i in range(b)]
    return outs, [{"answer": [1.0, 4.0]} for _ in range(b)], {}


def _free_text_inputs(b: int) -> tuple[list, list, dict]:
    outs = ["the cat sat on the mat and the dog is big"[: 10 + i % 30] for i in range(b)]
    return outs, [{"answer": "the big dog sat on a red mat"} for _ in range(b)], {}


def _speech_inputs(b: int) -> tuple[list, list, dict]:
    return [_noise(16000, i) for i in range(b)], [f"sample {i} text" for i in range(b)], {"sample_rate": 16000}


def _speaker_inputs(b: int) -> tuple[list, list, dict]:
    ref = _noise(16000, 999)
    return [_noise(16000, i) for i in range(b)], [{"prompt": "x"} for _ in range(b)], \
        {"sample_rate": 16000, "reference_audio": [ref] * b, "reference_sample_rate": 16000}


def specs(ckpt: Path) -> dict[str, tuple[str, dict, Callable[[int], tuple[list, list, dict]]]]:
    """name -> (component path, params, inputs(batch) -> (outputs, conds, metadata))."""
    return {
        "answer_accuracy": ("mmgrpo.rewards.text.accuracy:AnswerAccuracy", {}, _text_inputs),
        "think_answer_format": ("mmgrpo.rewards.text.format:ThinkAnswerFormat", {}, _text_inputs),
        "length": ("mmgrpo.rewards.text.length:LengthReward", {"target": 20}, _free_text_inputs),
        "rouge_l": ("mmgrpo.rewards.text.rouge:RougeL", {"extract": False}, _free_text_inputs),
        "temporal_iou": ("mmgrpo.rewards.text.grounding:TemporalIoU", {}, _grounding_inputs),
        "embedding_similarity": ("mmgrpo.rewards.text.embedding:EmbeddingSimilarity",
                                 {"checkpoint": str(ckpt / "bert")}, _free_text_inputs),
        "asr_whisper": ("mmgrpo.rewards.audio.asr:WhisperAsr",
                        {"checkpoint": str(ckpt / "whisper"), "max_new_tokens": 8, "batch_size": 32},
                        _speech_inputs),
        "speaker_similarity_wavlm": ("mmgrpo.rewards.audio.speaker:WavLMSpeakerSimilarity",
                                     {"checkpoint": str(ckpt / "wavlm"), "batch_size": 32}, _speaker_inputs),
    }


def throughput(fn: Callable[[], Any], batch: int, min_time: float, repeats: int) -> float:
    """Median samples/second over `repeats` windows, each running `fn` (one batch) for >= min_time s."""
    fn()                                                       # warm-up (lazy init, caches)
    rates = []
    for _ in range(repeats):
        calls, start = 0, time.perf_counter()
        while True:
            fn()
            calls += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_time:
                break
        rates.append(calls * batch / elapsed)
    return statistics.median(rates)


def start_server(path: str, params: dict) -> tuple[subprocess.Popen, str]:
    args = [sys.executable, "-m", "mmgrpo.rewards.server", path, "--port", "0", "--max-wait-ms", "0"]
    for k, v in params.items():
        args += ["--param", f"{k}={v}"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    line = proc.stdout.readline()
    if "serving reward" not in line:
        proc.kill()
        raise RuntimeError(f"reward server for {path} did not start: {line!r} {proc.stderr.read()[-2000:]}")
    return proc, line.strip().rsplit(" ", 1)[-1]


def main(argv: list[str] | None = None) -> int:
    from mmgrpo.rewards.audio.tiny import make_tiny_wavlm, make_tiny_whisper
    from mmgrpo.rewards.cli import build_reward
    from mmgrpo.rewards.remote import RemoteReward
    from mmgrpo.rewards.text.tiny import make_tiny_bert

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rewards", default="", help="comma list of reward names (default: all)")
    p.add_argument("--batches", default="1,8,32", help="comma list of batch sizes")
    p.add_argument("--min-time", type=float, default=0.5, help="seconds per timed window")
    p.add_argument("--repeats", type=int, default=3, help="timed windows per measurement (median taken)")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",") if b]
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp)
        make_tiny_whisper(ckpt / "whisper")
        make_tiny_wavlm(ckpt / "wavlm")
        make_tiny_bert(ckpt / "bert")
        table = specs(ckpt)
        names = [n for n in args.rewards.split(",") if n] or list(table)
        unknown = sorted(set(names) - set(table))
        if unknown:
            p.error(f"unknown rewards {unknown}; valid: {', '.join(table)}")
        results = []
        for name in names:
            path, params, inputs = table[name]
            reward = build_reward(path, params)
            proc, url = start_server(path, params)
            try:
                for b in batches:
                    outs, conds, meta = inputs(b)
                    remote = RemoteReward(RemoteReward.Config(url=url, batch_size=b))
                    local_sps = throughput(partial(reward, outs, conds, group_ids=torch.arange(b), **meta),
                                           b, args.min_time, args.repeats)
                    server_sps = throughput(partial(remote, outs, conds, group_ids=torch.arange(b), **meta),
                                            b, args.min_time, args.repeats)
                    results.append({"reward": name, "batch": b, "in_process_sps": round(local_sps, 2),
                                    "server_sps": round(server_sps, 2),
                                    "server_overhead_ms": round(1000 * (b / server_sps - b / local_sps), 3)})
                    print(json.dumps(results[-1]), file=sys.stderr, flush=True)
            finally:
                proc.terminate()
                proc.wait(timeout=10)
    report = {"benchmark": "rewards_audio_text", "python": platform.python_version(), "torch": torch.__version__,
              "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "min_time_s": args.min_time,
              "repeats": args.repeats, "results": results}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
