"""Reward throughput: samples/second of each reward's tiny instance, in process vs through the local reward
server (a real `python -m mmgrpo.rewards.server` process on 127.0.0.1), at batch 1, 8, 32, side by side;
the server under concurrent clients; and the server's memory on a decompression bomb vs a normal request.

    python benchmarks/rewards.py [--rewards pickscore,asr_whisper] [--batches 1,8,32]
                                 [--min-time 0.2] [--repeats 1] [--sections throughput,concurrency,memory]
                                 [--clients 1,8,32] [--out results.json]

(default sections: all three; only throughput when `--rewards` names rewards)

Prints one JSON object: per reward and batch size, `in_process_sps`, `server_sps` (both samples/second,
median of `--repeats` timed windows of at least `--min-time` seconds, after one warm-up call) and
`server_overhead_ms` (extra milliseconds per batch: payload encoding, HTTP and decoding), plus the
inputs each reward was fed. Model rewards use tiny random checkpoints of the real classes
(`mmgrpo.rewards.image.tiny`, `mmgrpo.rewards.audio.tiny`, `mmgrpo.rewards.text.tiny`), so the numbers
measure the reward plumbing (preprocessing, payload, HTTP), not a production model's speed.
Rewards that need an outside service (`vlm_judge`, `remote` itself) or a real checkpoint package
(`asr_faster_whisper`, `speaker_similarity_resemblyzer`) are not measured.

`concurrency`: requests/second of a served tiny reward (`length`, one short text per request) with 1, 8 and
32 client threads, each a `RemoteReward`, over `--min-time * 10` seconds, the server at its defaults
(micro-batching 5 ms, 32 connections); `requests_per_s` and `errors` (requests that failed after retries).
`memory`: the server process's peak RSS above its idle RSS (psutil, sampled every 2 ms) and the wall time
of one request, for a normal request (8 PNGs of 256x256), the 11 KB 1-bit 8192x8192 PNG bomb (refused 413
from its header) and a 1-bit bomb just inside the default 64 Mpx budget (decoded: the most one request
may cost; ~3.6 GB and 10-40 s with this reward), served by `jpeg_compressibility` at its defaults; plus
that last body decoded alone (`decode_request` in the benchmark process, no reward).
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
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch

Inputs = tuple[Any, list, dict]  # (outputs, conds, metadata) for one batch
IMAGE_SIDE = 128  # px of the benchmark's generated images (the tiny models resize to 32)
VIDEO_FRAMES, VIDEO_SIDE = 8, 64
GROUP = 4  # members per group for the groupwise rewards


@dataclass
class Spec:
    """How to build one reward and feed it a batch."""

    path: str  # package.module:Class
    params: dict
    inputs: Callable[[int], Inputs]
    what: str  # the inputs, in words (reported)
    groupwise: bool = False  # group ids are arange(b) // GROUP instead of one group per sample
    open_clip_folder: str | None = None  # register this tiny open_clip architecture in the server process


def _noise(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(seed)) * 0.3


def _text_inputs(b: int) -> Inputs:
    outs = [f"<think>add</think><answer>{i % 7}</answer>" for i in range(b)]
    return outs, [{"prompt": f"q{i}", "answer": str(i % 5)} for i in range(b)], {}


def _grounding_inputs(b: int) -> Inputs:
    outs = [f"<answer>from {i % 4}.5 to {i % 4 + 3}.0 seconds</answer>" for i in range(b)]
    return outs, [{"answer": [1.0, 4.0]} for _ in range(b)], {}


def _free_text_inputs(b: int) -> Inputs:
    outs = ["the cat sat on the mat and the dog is big"[: 10 + i % 30] for i in range(b)]
    return outs, [{"answer": "the big dog sat on a red mat"} for _ in range(b)], {}


def _speech_inputs(b: int) -> Inputs:
    return [_noise(16000, i) for i in range(b)], [f"sample {i} text" for i in range(b)], {"sample_rate": 16000}


def _speaker_inputs(b: int) -> Inputs:
    ref = _noise(16000, 999)
    return [_noise(16000, i) for i in range(b)], [{"prompt": "x"} for _ in range(b)], \
        {"sample_rate": 16000, "reference_audio": [ref] * b, "reference_sample_rate": 16000}


GENEVAL_PROMPTS = ["a photo of a dog", "a photo of two cats", "a photo of a red car", "a photo of a dog left of a cat"]


def _image_inputs(b: int) -> Inputs:
    images = torch.rand(b, 3, IMAGE_SIDE, IMAGE_SIDE, generator=torch.Generator().manual_seed(b))
    return images, [GENEVAL_PROMPTS[i % len(GENEVAL_PROMPTS)] for i in range(b)], {}


def _video_inputs(b: int) -> Inputs:
    videos = torch.rand(b, VIDEO_FRAMES, 3, VIDEO_SIDE, VIDEO_SIDE, generator=torch.Generator().manual_seed(b))
    return videos, [GENEVAL_PROMPTS[i % len(GENEVAL_PROMPTS)] for i in range(b)], {}


SHAPES_PROMPTS = ["a red circle", "two blue squares", "a green triangle left of a yellow circle",
                  "a yellow square and a red triangle"]


def _shapes_inputs(b: int) -> Inputs:
    from mmgrpo.pipelines.shapes.render import render_batch

    prompts = [SHAPES_PROMPTS[i % len(SHAPES_PROMPTS)] for i in range(b)]
    return render_batch(prompts, list(range(b))), prompts, {}


def _toy_inputs(b: int) -> Inputs:
    tokens = torch.randint(0, 8, (b, 12), generator=torch.Generator().manual_seed(b))
    return tokens, [i % 8 for i in range(b)], {}


def specs(ckpt: Path) -> dict[str, Spec]:
    """name -> Spec; `ckpt` holds the tiny checkpoints made by `make_checkpoints`."""
    clip, owlv2 = str(ckpt / "clip"), str(ckpt / "owlv2")
    img = f"images 3x{IMAGE_SIDE}x{IMAGE_SIDE}"
    vid = f"videos {VIDEO_FRAMES}x3x{VIDEO_SIDE}x{VIDEO_SIDE}"
    from mmgrpo.rewards.image.tiny import TINY_OPEN_CLIP

    return {
        "answer_accuracy": Spec("mmgrpo.rewards.text.accuracy:AnswerAccuracy", {}, _text_inputs, "short answers"),
        "think_answer_format": Spec("mmgrpo.rewards.text.format:ThinkAnswerFormat", {}, _text_inputs,
                                    "short answers"),
        "length": Spec("mmgrpo.rewards.text.length:LengthReward", {"target": 20}, _free_text_inputs, "short texts"),
        "rouge_l": Spec("mmgrpo.rewards.text.rouge:RougeL", {"extract": False}, _free_text_inputs, "short texts"),
        "temporal_iou": Spec("mmgrpo.rewards.text.grounding:TemporalIoU", {}, _grounding_inputs, "time spans"),
        "embedding_similarity": Spec("mmgrpo.rewards.text.embedding:EmbeddingSimilarity",
                                     {"checkpoint": str(ckpt / "bert")}, _free_text_inputs, "short texts"),
        "asr_whisper": Spec("mmgrpo.rewards.audio.asr:WhisperAsr",
                            {"checkpoint": str(ckpt / "whisper"), "max_new_tokens": 8, "batch_size": 32},
                            _speech_inputs, "1 s clips at 16 kHz"),
        "speaker_similarity_wavlm": Spec("mmgrpo.rewards.audio.speaker:WavLMSpeakerSimilarity",
                                         {"checkpoint": str(ckpt / "wavlm"), "batch_size": 32}, _speaker_inputs,
                                         "1 s clips at 16 kHz + reference"),
        "pickscore": Spec("mmgrpo.rewards.image.pickscore:PickScoreReward",
                          {"checkpoint": clip, "processor": clip, "batch_size": 32}, _image_inputs, img),
        "clip_score": Spec("mmgrpo.rewards.image.clip_score:CLIPScoreReward",
                           {"checkpoint": clip, "batch_size": 32}, _image_inputs, img),
        "aesthetic": Spec("mmgrpo.rewards.image.aesthetic:LaionAestheticReward",
                          {"head_weights": str(ckpt / "aesthetic_head.pth"), "clip_checkpoint": clip,
                           "batch_size": 32}, _image_inputs, img),
        "hpsv2": Spec("mmgrpo.rewards.image.hps:HPSv2Reward",
                      {"weights": str(ckpt / "open_clip" / "hps_tiny.pt"), "hub_repo": None,
                       "model_name": TINY_OPEN_CLIP, "batch_size": 32}, _image_inputs, img,
                      open_clip_folder=str(ckpt / "open_clip")),
        "jpeg_compressibility": Spec("mmgrpo.rewards.image.jpeg:JpegCompressibility", {}, _image_inputs, img),
        "jpeg_incompressibility": Spec("mmgrpo.rewards.image.jpeg:JpegIncompressibility", {}, _image_inputs, img),
        "geneval": Spec("mmgrpo.rewards.image.geneval:GenEvalReward", {"checkpoint": owlv2, "batch_size": 32},
                        _image_inputs, img + ", GenEval prompts"),
        "shapes": Spec("mmgrpo.rewards.image.shapes:ShapesReward", {}, _shapes_inputs,
                       "shapes-world renders 3x32x32"),
        "video_per_frame": Spec("mmgrpo.rewards.video.per_frame:PerFrameReward",
                                {"image_reward": {"name": "clip_score", "checkpoint": clip, "batch_size": 64}},
                                _video_inputs, vid + ", clip_score per frame"),
        "video_temporal_consistency": Spec("mmgrpo.rewards.video.clip_video:TemporalConsistencyReward",
                                           {"checkpoint": clip, "batch_size": 64}, _video_inputs, vid),
        "video_text_alignment": Spec("mmgrpo.rewards.video.clip_video:TextVideoAlignmentReward",
                                     {"checkpoint": clip, "batch_size": 64}, _video_inputs, vid),
        "group_rank": Spec("mmgrpo.rewards.groupwise:GroupRankReward",
                           {"reward": {"name": "pickscore", "checkpoint": clip, "processor": clip, "batch_size": 32}},
                           _image_inputs, img + f", pickscore ranked in groups of {GROUP}", groupwise=True),
        "group_diversity": Spec("mmgrpo.rewards.groupwise:GroupDiversityReward",
                                {"checkpoint": clip, "batch_size": 32}, _image_inputs,
                                img + f", CLIP features, groups of {GROUP}", groupwise=True),
        "weighted_sum": Spec("mmgrpo.rewards.compose:WeightedSum",
                             {"rewards": [{"name": "clip_score", "checkpoint": clip, "weight": 1.0},
                                          {"name": "jpeg_compressibility", "weight": 0.01}]},
                             _image_inputs, img + ", clip_score + jpeg_compressibility"),
        "toy_match": Spec("mmgrpo.pipelines.toy_tokens:ToyMatchReward", {}, _toy_inputs, "12-token sequences"),
    }


def make_checkpoints(ckpt: Path, names: list[str]) -> None:
    """Save the tiny checkpoints the chosen rewards load into `ckpt`."""
    from mmgrpo.rewards.audio.tiny import make_tiny_wavlm, make_tiny_whisper
    from mmgrpo.rewards.image import tiny as image_tiny
    from mmgrpo.rewards.text.tiny import make_tiny_bert

    clip_users = {"pickscore", "clip_score", "aesthetic", "video_per_frame", "video_temporal_consistency",
                  "video_text_alignment", "group_rank", "group_diversity", "weighted_sum"}
    want = set(names)
    if "asr_whisper" in want:
        make_tiny_whisper(ckpt / "whisper")
    if "speaker_similarity_wavlm" in want:
        make_tiny_wavlm(ckpt / "wavlm")
    if "embedding_similarity" in want:
        make_tiny_bert(ckpt / "bert")
    if want & (clip_users | {"geneval"}):
        tokenizer = image_tiny.clip_bpe_tokenizer()
        if want & clip_users:
            image_tiny.make_tiny_clip(ckpt / "clip", tokenizer)
            image_tiny.make_tiny_aesthetic_head(ckpt / "aesthetic_head.pth")
        if "geneval" in want:
            image_tiny.make_tiny_owlv2(ckpt / "owlv2", tokenizer)
    if "hpsv2" in want:
        image_tiny.make_tiny_open_clip(ckpt / "open_clip")


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


# The server process: register a tiny open_clip architecture first when the reward needs one (open_clip
# keeps architectures in a per-process table), then run `mmgrpo serve-reward`'s main.
SERVER_BOOT = """import sys
folder = sys.argv.pop(1)
if folder:
    from mmgrpo.rewards.image.tiny import register_tiny_open_clip
    register_tiny_open_clip(folder)
from mmgrpo.rewards.cli import serve_main
sys.exit(serve_main(sys.argv[1:]))
"""


def start_server(spec: Spec, server_args: tuple[str, ...] = ("--max-wait-ms", "0")) -> tuple[subprocess.Popen, str]:
    args = [sys.executable, "-c", SERVER_BOOT, spec.open_clip_folder or "", spec.path, "--port", "0", *server_args]
    for k, v in spec.params.items():
        args += ["--param", f"{k}={v if isinstance(v, str) else json.dumps(v)}"]  # JSON is YAML
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()
    if "serving reward" not in line:
        proc.kill()
        raise RuntimeError(f"reward server for {spec.path} did not start: {line!r} {proc.stderr.read()[-2000:]}")
    return proc, line.strip().rsplit(" ", 1)[-1]


def measure(name: str, spec: Spec, batches: list[int], min_time: float, repeats: int) -> list[dict]:
    """One row per batch size: in-process and server samples/second of one reward."""
    from mmgrpo.rewards.cli import build_reward
    from mmgrpo.rewards.remote import RemoteReward

    reward = build_reward(spec.path, spec.params)
    proc, url = start_server(spec)
    rows = []
    try:
        for b in batches:
            outs, conds, meta = spec.inputs(b)
            gids = torch.arange(b) // GROUP if spec.groupwise else torch.arange(b)
            remote = RemoteReward(RemoteReward.Config(url=url, batch_size=b, groupwise=spec.groupwise))
            local_sps = throughput(partial(reward, outs, conds, group_ids=gids, **meta), b, min_time, repeats)
            server_sps = throughput(partial(remote, outs, conds, group_ids=gids, **meta), b, min_time, repeats)
            rows.append({"reward": name, "batch": b, "in_process_sps": round(local_sps, 2),
                         "server_sps": round(server_sps, 2),
                         "server_overhead_ms": round(1000 * (b / server_sps - b / local_sps), 3),
                         "inputs": spec.what})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return rows


def concurrency(clients: list[int], seconds: float) -> list[dict]:
    """Requests/second of the served `length` reward with k concurrent client threads (one text per request)."""
    import threading

    from mmgrpo.rewards.remote import RemoteReward, RemoteRewardError

    spec = Spec("mmgrpo.rewards.text.length:LengthReward", {"target": 20}, _free_text_inputs, "short texts")
    proc, url = start_server(spec, ())                                   # the server's defaults
    rows = []
    try:
        health = RemoteReward(RemoteReward.Config(url=url)).health()
        for k in clients:
            stop, counts, errors = threading.Event(), [0] * k, [0] * k

            def client(i: int, stop=stop, counts=counts, errors=errors) -> None:
                remote = RemoteReward(RemoteReward.Config(url=url, batch_size=1, retries=3, backoff=0.05))
                outs, conds, _ = _free_text_inputs(1)
                while not stop.is_set():
                    try:
                        remote(outs, conds)
                        counts[i] += 1
                    except RemoteRewardError:
                        errors[i] += 1

            threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(k)]
            start = time.perf_counter()
            for t in threads:
                t.start()
            time.sleep(seconds)
            stop.set()
            for t in threads:
                t.join(timeout=60)
            elapsed = time.perf_counter() - start
            rows.append({"clients": k, "requests": sum(counts), "requests_per_s": round(sum(counts) / elapsed, 1),
                         "errors": sum(errors), "seconds": round(elapsed, 2),
                         "per_client_per_s": round(sum(counts) / elapsed / k, 1)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        return [{"server": {k: health[k] for k in ("max_batch", "max_connections", "request_timeout")}}, *rows]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _one_bit_png(width: int, height: int) -> bytes:
    """A 1-bit grayscale PNG of zeros written by hand (8192x8192: ~8 KB that decodes to 67 Mpx)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + (width + 7) // 8)
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(row * height, 9))
            + chunk(b"IEND", b""))


class PeakRSS:
    """`with PeakRSS(process) as m:` samples `process`'s RSS every 2 ms; then `m.idle` (at entry) and `m.peak`."""

    def __init__(self, process):
        self.process = process

    def __enter__(self) -> "PeakRSS":
        import threading

        self.idle = self.peak = self.process.memory_info().rss
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.002)

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


def _decode_only(case: tuple[str, bytes]) -> dict:
    """Peak RSS growth of this process while `decode_request` decodes `case` (no reward, no HTTP)."""
    import gc

    import psutil

    from mmgrpo.rewards.payload import decode_request

    gc.collect()
    with PeakRSS(psutil.Process()) as m:
        start = time.perf_counter()
        request = decode_request(case[1])
        elapsed = time.perf_counter() - start
    pixels = int(request.outputs.shape[-1] * request.outputs.shape[-2])
    del request
    return {"request": case[0] + ", decode only (decode_request in the benchmark process)", "body_bytes": len(case[1]),
            "status": None, "seconds": round(elapsed, 3), "idle_rss_mb": round(m.idle / 2 ** 20, 1),
            "peak_rss_growth_mb": round((m.peak - m.idle) / 2 ** 20, 1),
            "bytes_per_pixel": round((m.peak - m.idle) / pixels, 1)}


def memory() -> list[dict]:
    """Peak RSS growth of the server process and wall time: normal request vs bombs (see the docstring)."""
    import base64
    import urllib.error
    import urllib.request

    import psutil

    from mmgrpo.rewards.payload import FORMAT, MAX_REQUEST_PIXELS, encode_request

    def body_of(pngs: list[bytes]) -> bytes:
        return json.dumps({"format": FORMAT, "n": len(pngs), "kind": "images", "conds": [""] * len(pngs),
                           "outputs": {"$images": {"format": "png",
                                                   "data": [base64.b64encode(p).decode() for p in pngs]}},
                           "group_ids": list(range(len(pngs))), "per_sample": {}, "shared": {}}).encode()

    side = int((MAX_REQUEST_PIXELS * 0.98) ** 0.5) // 8 * 8                # a square just inside the budget
    cases = [
        ("normal: 8 PNGs 256x256", encode_request(torch.rand(8, 3, 256, 256, generator=torch.Generator().manual_seed(0)),
                                                  [""] * 8, list(range(8)))),
        ("bomb: 1-bit PNG 8192x8192", body_of([_one_bit_png(8192, 8192)])),
        (f"bomb inside the budget: 1-bit PNG {side}x{side}", body_of([_one_bit_png(side, side)])),
    ]
    spec = Spec("mmgrpo.rewards.image.jpeg:JpegCompressibility", {}, _image_inputs, "images")
    proc, url = start_server(spec, ())
    server = psutil.Process(proc.pid)
    rows = []
    try:
        for what, body in cases:
            time.sleep(0.5)
            with PeakRSS(server) as m:
                start = time.perf_counter()
                req = urllib.request.Request(url + "/score", data=body,
                                             headers={"Content-Type": "application/json"})
                try:
                    with urllib.request.urlopen(req, timeout=300) as resp:
                        status = resp.status
                        resp.read()
                except urllib.error.HTTPError as exc:
                    status = exc.code
                    exc.read()
                elapsed = time.perf_counter() - start
            rows.append({"request": what, "body_bytes": len(body), "status": status,
                         "seconds": round(elapsed, 3), "idle_rss_mb": round(m.idle / 2 ** 20, 1),
                         "peak_rss_growth_mb": round((m.peak - m.idle) / 2 ** 20, 1)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    rows.append(_decode_only(cases[-1]))
    normal = rows[0]["peak_rss_growth_mb"] or 0.1
    for r in rows:
        r["peak_growth_vs_normal"] = round(r["peak_rss_growth_mb"] / normal, 2)
    return rows


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rewards", default="", help="comma list of reward names (default: all)")
    p.add_argument("--batches", default="1,8,32", help="comma list of batch sizes")
    p.add_argument("--min-time", type=float, default=0.2, help="seconds per timed window")
    p.add_argument("--repeats", type=int, default=1, help="timed windows per measurement (median taken)")
    p.add_argument("--sections", default=None,
                   help="comma list of: throughput (per reward), concurrency, memory; default: all three, or "
                        "only throughput when --rewards names rewards")
    p.add_argument("--clients", default="1,8,32", help="comma list of concurrent client counts (concurrency)")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",") if b]
    default = "throughput" if args.rewards else "throughput,concurrency,memory"
    sections = {x for x in (args.sections or default).split(",") if x}
    if sections - {"throughput", "concurrency", "memory"}:
        p.error(f"unknown sections {sorted(sections - {'throughput', 'concurrency', 'memory'})}")
    started = time.perf_counter()
    results: list[dict] = []
    if "throughput" in sections:
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = Path(tmp)
            table = specs(ckpt)
            names = [n for n in args.rewards.split(",") if n] or list(table)
            unknown = sorted(set(names) - set(table))
            if unknown:
                p.error(f"unknown rewards {unknown}; valid: {', '.join(table)}")
            make_checkpoints(ckpt, names)
            for name in names:
                results += measure(name, table[name], batches, args.min_time, args.repeats)
    report = {"benchmark": "rewards", "python": platform.python_version(), "torch": torch.__version__,
              "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "min_time_s": args.min_time,
              "repeats": args.repeats, "results": results}
    if "concurrency" in sections:
        report["concurrency"] = concurrency([int(c) for c in args.clients.split(",") if c], args.min_time * 10)
    if "memory" in sections:
        report["memory"] = memory()
    report["wall_s"] = round(time.perf_counter() - started, 1)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
