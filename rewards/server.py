"""Serve one reward over HTTP, out of process, with micro-batching, bearer tokens and a safe payload format.

`RewardServer(reward)` listens on 127.0.0.1 by default (stdlib `ThreadingHTTPServer`). Binding any
non-loopback address requires a bearer token; on loopback the token is optional (when set, it is required).
Endpoints:
- `GET /health` -> `{"name", "groupwise", "format", "max_payload_bytes", "max_batch"}`;
- `POST /score` with a `payload` request body -> `{"scores": [...]}`.
Status codes: 400 malformed payload, 401 missing/wrong token, 404 unknown path, 411 no Content-Length,
413 body above `max_payload_bytes` (refused before it is read), 422 the reward raised on these inputs.
Handler threads only parse and answer; one worker thread calls the reward, so a reward need not be thread-safe.

Micro-batching: the worker takes the first waiting request, then keeps collecting for up to `max_wait_ms`
or until `max_batch` samples; requests of the same outputs kind and equal shared metadata are concatenated
into one reward call (group ids offset so groups from different requests never merge) and the scores split
back. If a merged call raises, each request is retried alone so one bad request cannot fail the others.

Run: `python -m mmgrpo.rewards.server NAME [--host --port --token --param k=v ...]` (same flags as
`mmgrpo serve-reward`); the token may also come from the environment variable MMGRPO_REWARD_TOKEN.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import queue
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import torch
from torch import Tensor

from mmgrpo.reward import call_reward

from .payload import FORMAT, PayloadError, Request, decode_request, encode_scores

TOKEN_ENV = "MMGRPO_REWARD_TOKEN"


def is_loopback(host: str) -> bool:
    """Whether `host` is a loopback address (127.0.0.0/8, ::1) or `localhost`."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class _Job:
    request: Request
    done: threading.Event = field(default_factory=threading.Event)
    scores: Tensor | None = None
    error: str | None = None


def _cat(parts: list[Any]) -> Any:
    """Concatenate per-request columns: tensors with one trailing shape by `torch.cat`, else as lists."""
    if all(isinstance(p, Tensor) for p in parts) and len({tuple(p.shape[1:]) for p in parts}) == 1:
        return torch.cat(parts)
    out: list[Any] = []
    for p in parts:
        out += list(p)
    return out


def merge_requests(requests: list[Request]) -> tuple[Any, list, Tensor, dict[str, Any]]:
    """Requests that share outputs kind, per-sample keys and shared metadata -> one reward call's arguments.

    Group ids of request k are shifted past those of requests < k: `g - min(g) + offset`.
    """
    gids, offset = [], 0
    for r in requests:
        if r.n:
            g = r.group_ids - r.group_ids.min() + offset      # [n_k]
            offset = int(g.max()) + 1
            gids.append(g)
    group_ids = torch.cat(gids) if gids else torch.zeros(0, dtype=torch.int64)
    conds = [c for r in requests for c in r.conds]
    outputs = _cat([r.outputs for r in requests])
    metadata = dict(requests[0].shared)
    for key in requests[0].per_sample:
        metadata[key] = _cat([r.per_sample[key] for r in requests])
    return outputs, conds, group_ids, metadata


def _batch_key(r: Request) -> tuple:
    return (r.kind, type(r.outputs).__name__, tuple(sorted(r.per_sample)), r.shared_json)


class RewardServer:
    """One reward behind HTTP; `start()` serves in a background thread, `serve_forever()` in this one."""

    def __init__(self, reward: Any, host: str = "127.0.0.1", port: int = 0, token: str | None = None,
                 max_payload_bytes: int = 64 * 1024 * 1024, max_batch: int = 64, max_wait_ms: float = 5.0,
                 socket_timeout: float = 60.0, verbose: bool = False):
        if not is_loopback(host) and not token:
            raise ValueError(f"binding reward server to {host!r} (not loopback) needs a bearer token: pass "
                             f"--token or set {TOKEN_ENV}; or bind 127.0.0.1")
        if max_batch < 1 or max_payload_bytes < 1:
            raise ValueError(f"max_batch and max_payload_bytes must be >= 1, got {max_batch}, {max_payload_bytes}")
        self.reward = reward
        self.name = getattr(reward, "name", None) or getattr(reward, "__name__", type(reward).__name__)
        self.groupwise = bool(getattr(reward, "groupwise", False))
        self.token = token or None
        self.max_payload_bytes = int(max_payload_bytes)
        self.max_batch = int(max_batch)
        self.max_wait = max_wait_ms / 1000.0
        self.verbose = verbose
        self.calls = 0                                       # reward invocations, for tests and logs
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self.httpd = ThreadingHTTPServer((host, port), self._handler_class(socket_timeout))
        self.httpd.daemon_threads = True
        self._worker = threading.Thread(target=self._work, name=f"reward-{self.name}", daemon=True)
        self._worker.start()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}"

    def start(self) -> "RewardServer":
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="reward-http", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def shutdown(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._queue.put(None)
        self._worker.join(timeout=5)

    def __enter__(self) -> "RewardServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    # ------------------------------------------------------------------ scoring

    def submit(self, request: Request, timeout: float | None = None) -> _Job:
        job = _Job(request)
        self._queue.put(job)
        job.done.wait(timeout)
        return job

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            jobs, total = [job], job.request.n
            deadline = time.monotonic() + self.max_wait
            while total < self.max_batch:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    nxt = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                jobs.append(nxt)
                total += nxt.request.n
            groups: dict[tuple, list[_Job]] = {}
            for j in jobs:
                groups.setdefault(_batch_key(j.request), []).append(j)
            for group in groups.values():
                self._run(group)

    def _score(self, requests: list[Request]) -> Tensor:
        outputs, conds, group_ids, metadata = merge_requests(requests)
        self.calls += 1
        return call_reward(self.reward, outputs, conds, group_ids, **metadata)

    def _run(self, jobs: list[_Job]) -> None:
        try:
            scores = self._score([j.request for j in jobs])
            for j, part in zip(jobs, scores.split([j.request.n for j in jobs])):
                j.scores = part
        except Exception as exc:  # noqa: BLE001 - reported to the client
            if len(jobs) == 1:
                jobs[0].error = str(exc)
            else:
                for j in jobs:
                    self._run([j])
                return
        for j in jobs:
            j.done.set()

    # ------------------------------------------------------------------ HTTP

    def _handler_class(self, socket_timeout: float) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = socket_timeout
            server_version = "mmgrpo-reward/1"

            def log_message(self, fmt: str, *args: Any) -> None:
                if server.verbose:
                    super().log_message(fmt, *args)

            def _send(self, status: int, body: dict | bytes, headers: dict[str, str] | None = None) -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _reject(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
                self.close_connection = True
                self._send(status, {"error": message}, headers)
                # read and drop the unread body (up to 4x the limit), so a client still sending it
                # gets to read this answer instead of a reset connection
                length = self.headers.get("Content-Length", "")
                left = min(int(length), 4 * server.max_payload_bytes) if length.isdigit() else 0
                try:
                    while left > 0:
                        chunk = self.rfile.read(min(left, 1 << 20))
                        if not chunk:
                            break
                        left -= len(chunk)
                except OSError:
                    pass

            def _authorized(self) -> bool:
                if server.token is None:
                    return True
                got = self.headers.get("Authorization", "")
                ok = got.startswith("Bearer ") and hmac.compare_digest(got[7:].encode(), server.token.encode())
                if not ok:
                    self._reject(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
                return ok

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if not self._authorized():
                    return
                if self.path.rstrip("/") != "/health":
                    self._reject(404, f"unknown path {self.path!r}; use GET /health or POST /score")
                    return
                self._send(200, {"name": server.name, "groupwise": server.groupwise, "format": FORMAT,
                                 "max_payload_bytes": server.max_payload_bytes, "max_batch": server.max_batch})

            def do_POST(self) -> None:  # noqa: N802
                if not self._authorized():
                    return
                if self.path.rstrip("/") != "/score":
                    self._reject(404, f"unknown path {self.path!r}; use POST /score")
                    return
                length = self.headers.get("Content-Length")
                if length is None or not length.isdigit():
                    self._reject(411, "a Content-Length header is required")
                    return
                if int(length) > server.max_payload_bytes:
                    self._reject(413, f"payload of {length} bytes exceeds the server's limit of "
                                      f"{server.max_payload_bytes} bytes; send smaller batches")
                    return
                body = self.rfile.read(int(length))
                try:
                    request = decode_request(body)
                except PayloadError as exc:
                    self.close_connection = True
                    self._send(400, {"error": f"malformed payload: {exc}"})
                    return
                job = server.submit(request)
                if job.error is not None or job.scores is None:
                    self._send(422, {"error": job.error or "the reward returned nothing"})
                    return
                self._send(200, encode_scores(job.scores))

        return Handler


if __name__ == "__main__":
    import sys

    from .cli import serve_main

    sys.exit(serve_main(sys.argv[1:]))
