"""Serve one reward over HTTP, out of process, with micro-batching, bearer tokens and a safe payload format.

`RewardServer(reward)` listens on 127.0.0.1 by default (stdlib `ThreadingHTTPServer`). Binding any
non-loopback address requires a bearer token; on loopback the token is optional (when set, it is required).
Endpoints:
- `GET /health` -> `{"name", "groupwise", "format", "reads_media", "max_payload_bytes", "max_batch", ...}`;
- `POST /score` with a `payload` request body -> `{"scores": [...]}`.
Every request gets an HTTP status and a JSON body (`{"error": "..."}` unless 200): 400 malformed request or
payload, 401 missing/wrong token, 404 unknown path, 408 request not read within `request_timeout`, 411 no
Content-Length, 413 body above `max_payload_bytes` (refused before it is read) or media above the
request's decode budget, 422 the reward raised or does not read the outputs' media, 500 a server bug
(the server keeps serving), 503 all `max_connections` handlers busy (the client retries).

Bounds, so that no client can exhaust the server:
- decoding: per request at most `max_pixels` decoded pixels and `max_audio_samples` decoded audio samples,
  checked from the headers before decoding, and media decoded only where the reward reads it (its
  `reads_media`, `payload.media_reads`);
- time: each request's line, headers and body must arrive within `request_timeout` seconds in total
  (a client trickling bytes is answered 408 and closed); each read also times out after `socket_timeout`;
- threads: at most `max_connections` connections are handled at once; a further one waits up to
  BUSY_WAIT_S for a free handler, else it is answered 503 by the accepting thread and closed.
Handler threads only parse and answer; one worker thread calls the reward, so a reward need not be thread-safe.

Micro-batching: the worker takes the first waiting request, then keeps collecting for up to `max_wait_ms`
or until `max_batch` samples; requests of the same outputs kind and equal shared metadata are concatenated
into one reward call (group ids offset so groups from different requests never merge) and the scores split
back. If a merged call raises, each request is retried alone so one bad request cannot fail the others.

Run: `python -m mmgrpo.rewards.server NAME [--host --port --token --param k=v ...]` (the same as
`mmgrpo serve-reward`); the token may also come from the environment variable MMGRPO_REWARD_TOKEN.
"""

from __future__ import annotations

import argparse
import hmac
import io
import ipaddress
import json
import os
import queue
import re
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import torch
from torch import Tensor

from mmgrpo.reward import RewardError, call_reward

from .payload import (
    FORMAT,
    MAX_REQUEST_PIXELS,
    MAX_REQUEST_SAMPLES,
    DecodeLimits,
    MediaNotRead,
    PayloadError,
    PayloadTooLarge,
    Request,
    decode_request,
    encode_scores,
    media_reads,
)
from .spec import build_reward, parse_params

TOKEN_ENV = "MMGRPO_REWARD_TOKEN"
MAX_ERROR_CHARS = 2000  # longest error message sent (messages may quote the request)
BUSY_WAIT_S = 0.1  # how long a connection beyond max_connections waits for a handler before its 503
_DIGITS = re.compile(r"[0-9]{1,19}")  # Content-Length: ASCII digits only ("²".isdigit() is true), < 10**19


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
    status: int = 422                                      # of `error`: 422 the reward raised, 500 a server bug


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

    Group ids of request k are shifted past those of requests < k: `g - min(g) + offset`. (Ids lie in
    [-2**62, 2**62), so the shift fits int64; ids spread so wide that the offset would not are renumbered
    densely first, which keeps the same groups.)
    """
    gids, offset = [], 0
    for r in requests:
        if r.n:
            g = r.group_ids - r.group_ids.min()
            if int(g.max()) >= 2 ** 62 - offset:
                g = torch.unique(r.group_ids, return_inverse=True)[1]
            g = g + offset                                   # [n_k]
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


class RequestDeadline(TimeoutError):
    """The request's line, headers and body did not arrive within the server's request_timeout."""


class _DeadlineReader(io.RawIOBase):
    """The connection's receive side; while `deadline` is set, each recv waits at most until it."""

    def __init__(self, sock: socket.socket, per_read: float):
        self.sock, self.per_read = sock, per_read
        self.deadline: float | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise RequestDeadline()
            self.sock.settimeout(min(left, self.per_read))
        try:
            return self.sock.recv_into(buf)
        except TimeoutError:
            if self.deadline is not None and time.monotonic() >= self.deadline:
                raise RequestDeadline() from None
            raise


def _error_response(status: int, message: str, headers: dict[str, str] | None = None) -> bytes:
    """A complete HTTP/1.0 response with a JSON error body (for answers written outside a handler)."""
    from http import HTTPStatus

    body = json.dumps({"error": message}).encode()
    lines = [f"HTTP/1.0 {status} {HTTPStatus(status).phrase}", "Content-Type: application/json",
             f"Content-Length: {len(body)}", "Connection: close", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class _BoundedHTTPServer(ThreadingHTTPServer):
    """A thread per connection, at most `max_connections` at once; beyond, 503 after BUSY_WAIT_S."""

    daemon_threads = True
    request_queue_size = 128                                  # listen backlog (socketserver's default is 5)

    def __init__(self, address: tuple, handler: type, max_connections: int, verbose: bool):
        self._slots = threading.BoundedSemaphore(max_connections)
        self.max_connections = max_connections
        self.verbose = verbose
        self.refused = 0                                      # connections answered 503, for tests and logs
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(timeout=BUSY_WAIT_S):
            self.refused += 1
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def _refuse(self, request: socket.socket) -> None:
        """503 on the accepting thread: a short send, then a brief drain so the client reads it (not a reset)."""
        try:
            request.settimeout(0.05)
            request.sendall(_error_response(503, f"all {self.max_connections} connections of the reward server "
                                                 "are busy; retry shortly", {"Retry-After": "1"}))
            request.shutdown(socket.SHUT_WR)
            end = time.monotonic() + 0.05
            while time.monotonic() < end and request.recv(1 << 16):
                pass
        except OSError:
            pass
        finally:
            self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if self.verbose:
            exc = sys.exc_info()[1]
            print(f"reward server: connection from {client_address}: {type(exc).__name__}: {exc}", file=sys.stderr)


class RewardServer:
    """One reward behind HTTP; `start()` serves in a background thread, `serve_forever()` in this one."""

    def __init__(self, reward: Any, host: str = "127.0.0.1", port: int = 0, token: str | None = None,
                 max_payload_bytes: int = 64 * 1024 * 1024, max_batch: int = 64, max_wait_ms: float = 5.0,
                 socket_timeout: float = 60.0, request_timeout: float = 30.0, max_connections: int = 32,
                 max_pixels: int = MAX_REQUEST_PIXELS, max_audio_samples: int = MAX_REQUEST_SAMPLES,
                 verbose: bool = False):
        if not is_loopback(host) and not token:
            raise ValueError(f"binding reward server to {host!r} (not loopback) needs a bearer token: pass "
                             f"--token or set {TOKEN_ENV}; or bind 127.0.0.1")
        if max_batch < 1 or max_payload_bytes < 1 or max_connections < 1:
            raise ValueError(f"max_batch, max_payload_bytes and max_connections must be >= 1, got {max_batch}, "
                             f"{max_payload_bytes}, {max_connections}")
        if not (request_timeout > 0 and socket_timeout > 0):
            raise ValueError(f"request_timeout and socket_timeout must be > 0 seconds, got {request_timeout}, "
                             f"{socket_timeout}")
        if max_pixels < 0 or max_audio_samples < 0:
            raise ValueError(f"max_pixels and max_audio_samples must be >= 0, got {max_pixels}, {max_audio_samples}")
        self.reward = reward
        self.name = getattr(reward, "name", None) or getattr(reward, "__name__", type(reward).__name__)
        self.groupwise = bool(getattr(reward, "groupwise", False))
        self.reads = media_reads(reward)
        self.token = token or None
        self.max_payload_bytes = int(max_payload_bytes)
        self.max_batch = int(max_batch)
        self.max_wait = max_wait_ms / 1000.0
        self.request_timeout = float(request_timeout)
        self.max_pixels, self.max_audio_samples = int(max_pixels), int(max_audio_samples)
        self.verbose = verbose
        self.calls = 0                                       # reward invocations, for tests and logs
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self.httpd = _BoundedHTTPServer((host, port), self._handler_class(socket_timeout), int(max_connections),
                                        verbose)
        self._worker = threading.Thread(target=self._work, name=f"reward-{self.name}", daemon=True)
        self._worker.start()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}"

    def health(self) -> dict:
        return {"name": self.name, "groupwise": self.groupwise, "format": FORMAT,
                "reads_media": sorted(f"{p}:{k}" for p, k in self.reads),
                "max_payload_bytes": self.max_payload_bytes, "max_batch": self.max_batch,
                "max_pixels": self.max_pixels, "max_audio_samples": self.max_audio_samples,
                "max_connections": self.httpd.max_connections, "request_timeout": self.request_timeout}

    def limits(self) -> DecodeLimits:
        """A fresh decode budget for one request."""
        return DecodeLimits(reads=self.reads, max_pixels=self.max_pixels, max_samples=self.max_audio_samples)

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
                try:
                    self._run(group)
                finally:                                    # no handler waits forever, whatever happened
                    for j in group:
                        if not j.done.is_set():
                            j.error = j.error or "the reward worker failed on this request"
                            j.status = 500
                            j.done.set()

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
                jobs[0].error = str(exc) if isinstance(exc, RewardError) else \
                    f"server error while scoring: {type(exc).__name__}: {exc}"
                jobs[0].status = 422 if isinstance(exc, RewardError) else 500
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

            def setup(self) -> None:
                super().setup()
                self.rfile.close()                               # StreamRequestHandler's; replaced by one
                self._reader = _DeadlineReader(self.connection, socket_timeout)   # that keeps the deadline
                self.rfile = io.BufferedReader(self._reader)
                self._responded = False

            def finish(self) -> None:
                """After an error answer, half-close and drain briefly (<= 0.2 s, 1 MiB): a client still
                sending then reads the answer instead of a connection reset."""
                super().finish()
                if not getattr(self, "_error_sent", False):
                    return
                try:
                    self.connection.shutdown(socket.SHUT_WR)
                    self.connection.settimeout(0.05)
                    end, left = time.monotonic() + 0.2, 1 << 20
                    while left > 0 and time.monotonic() < end:
                        chunk = self.connection.recv(min(left, 1 << 16))
                        if not chunk:
                            break
                        left -= len(chunk)
                except OSError:
                    pass

            def log_message(self, fmt: str, *args: Any) -> None:
                if server.verbose:
                    super().log_message(fmt, *args)

            def handle_one_request(self) -> None:
                """`BaseHTTPRequestHandler.handle_one_request` under a deadline, answering every failure."""
                self._reader.deadline = time.monotonic() + server.request_timeout
                self._responded = False
                self.command, self.request_version, self.requestline = "", "HTTP/1.0", ""
                try:
                    self.raw_requestline = self.rfile.readline(65537)
                    if len(self.raw_requestline) > 65536:
                        self.send_error(414, "request line longer than 65536 bytes")
                        return
                    if not self.raw_requestline:
                        self.close_connection = True             # the client closed without a request
                        return
                    if not self.raw_requestline.strip():
                        self.send_error(400, "empty request line")
                        return
                    if not self.parse_request():
                        return
                    if self.request_version == "HTTP/0.9":
                        self.request_version = "HTTP/1.0"
                        self.send_error(400, "HTTP/0.9 requests are not supported; send HTTP/1.0 or 1.1")
                        return
                    method = getattr(self, "do_" + self.command, None)
                    if method is None:
                        self.send_error(501, f"unsupported method {self.command!r}; use GET /health or POST /score")
                        return
                    method()
                    self.wfile.flush()
                except RequestDeadline:
                    self.close_connection = True
                    self._answer_late(408, f"request not received within {server.request_timeout:g} s "
                                           "(the server's request_timeout)")
                except (TimeoutError, ConnectionError):
                    self.close_connection = True
                except Exception as exc:  # noqa: BLE001 - a bug here must not leave the client without an answer
                    self.close_connection = True
                    if server.verbose:
                        import traceback

                        traceback.print_exc()
                    self._answer_late(500, f"internal server error: {type(exc).__name__}: {exc}")

            def _answer_late(self, status: int, message: str) -> None:
                if self._responded:
                    return
                try:
                    self.connection.settimeout(socket_timeout)
                    if self.request_version == "HTTP/0.9":
                        self.request_version = "HTTP/1.0"
                    self._send(status, {"error": message})
                except OSError:
                    pass

            def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
                """http.server's own errors (400 bad request line, 414, 431, 501, ...) as JSON, too."""
                self.close_connection = True
                if self.request_version == "HTTP/0.9":
                    self.request_version = "HTTP/1.0"              # always send a status line
                phrase = self.responses.get(code, ("error",))[0]
                self._send(code, {"error": message or explain or phrase})

            def _send(self, status: int, body: dict | bytes, headers: dict[str, str] | None = None) -> None:
                self._reader.deadline = None
                self.connection.settimeout(socket_timeout)
                if isinstance(body, dict) and len(str(body.get("error", ""))) > MAX_ERROR_CHARS:
                    body = {"error": str(body["error"])[: MAX_ERROR_CHARS - 3] + "..."}   # echoes stay small
                data = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
                self._responded = True
                self._error_sent = status >= 400
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if self.close_connection:
                    self.send_header("Connection", "close")
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _reject(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
                self.close_connection = True
                self._send(status, {"error": message}, headers)
                # read and drop the unread body (up to 4x the limit, within the request deadline), so a
                # client still sending it gets to read this answer instead of a reset connection
                length = self._content_length()
                left = min(length, 4 * server.max_payload_bytes) if isinstance(length, int) else 0
                self._reader.deadline = time.monotonic() + server.request_timeout
                try:
                    while left > 0:
                        chunk = self.rfile.read(min(left, 1 << 20))
                        if not chunk:
                            break
                        left -= len(chunk)
                except OSError:
                    pass

            def _content_length(self) -> int | str | None:
                """The Content-Length as an int; None if absent; the raw text if it is not one decimal number."""
                values = self.headers.get_all("Content-Length") or []
                if not values:
                    return None
                if len(set(v.strip() for v in values)) != 1:
                    return ", ".join(values)
                raw = values[0].strip()
                return int(raw) if _DIGITS.fullmatch(raw) else raw

            def _authorized(self) -> bool:
                if server.token is None:
                    return True
                got = self.headers.get("Authorization", "")
                ok = got.startswith("Bearer ") and hmac.compare_digest(got[7:].encode("utf-8", "replace"),
                                                                       server.token.encode())
                if not ok:
                    self._reject(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
                return ok

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if not self._authorized():
                    return
                if self.path.rstrip("/") != "/health":
                    self._reject(404, f"unknown path {self.path[:200]!r}; use GET /health or POST /score")
                    return
                self._send(200, server.health())

            def do_POST(self) -> None:  # noqa: N802
                if not self._authorized():
                    return
                if self.path.rstrip("/") != "/score":
                    self._reject(404, f"unknown path {self.path[:200]!r}; use POST /score")
                    return
                length = self._content_length()
                if length is None:
                    self._reject(411, "a Content-Length header is required")
                    return
                if isinstance(length, str):
                    if re.fullmatch(r"[0-9]{20,}", length):
                        self._reject(413, f"Content-Length of {len(length)} digits exceeds the server's limit of "
                                          f"{server.max_payload_bytes} bytes; send smaller batches")
                    else:
                        self._reject(400, f"Content-Length must be one decimal number of bytes, got {length[:40]!r}")
                    return
                if length > server.max_payload_bytes:
                    self._reject(413, f"payload of {length} bytes exceeds the server's limit of "
                                      f"{server.max_payload_bytes} bytes; send smaller batches")
                    return
                body = self.rfile.read(length)
                self._reader.deadline = None                     # the body is in; scoring has no deadline
                if len(body) < length:
                    self.close_connection = True
                    self._send(400, {"error": f"body ended after {len(body)} of {length} bytes (Content-Length)"})
                    return
                try:
                    request = decode_request(body, server.limits())
                except PayloadTooLarge as exc:
                    self.close_connection = True
                    self._send(413, {"error": f"payload too large to decode: {exc}"})
                    return
                except MediaNotRead as exc:
                    self.close_connection = True
                    self._send(422, {"error": f"reward {server.name!r}: {exc}"})
                    return
                except PayloadError as exc:
                    self.close_connection = True
                    self._send(400, {"error": f"malformed payload: {exc}"})
                    return
                del body
                job = server.submit(request)
                if job.error is not None or job.scores is None:
                    self._send(job.status if job.error is not None else 500,
                               {"error": job.error or "the reward returned nothing"})
                    return
                self._send(200, encode_scores(job.scores))

        return Handler


# ---------------------------------------------------------------------- `mmgrpo serve-reward`

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
    p.add_argument("--max-payload-mb", type=float, default=64.0, help="largest request body accepted (MiB)")
    p.add_argument("--max-pixels", type=int, default=MAX_REQUEST_PIXELS,
                   help="decoded image pixels per request, all images together")
    p.add_argument("--max-audio-samples", type=int, default=MAX_REQUEST_SAMPLES,
                   help="decoded audio samples per request, all clips and channels together")
    p.add_argument("--max-connections", type=int, default=32,
                   help="connections handled at once; more are answered 503")
    p.add_argument("--request-timeout", type=float, default=30.0,
                   help="seconds a client has to send a request's line, headers and body")
    p.add_argument("--verbose", action="store_true", help="log every request")
    p.add_argument("--debug", action="store_true", help="show the traceback of a failure")
    return p


def serve_main(argv: list[str]) -> int:
    """`mmgrpo serve-reward`: build the reward, serve it until interrupted. Prints the URL when ready.

    Exit codes: 0 after an interrupt, 2 bad arguments or a reward that cannot be built, 1 the server failed."""
    args = _server_parser().parse_args(argv)
    try:
        if not args.max_payload_mb > 0:
            raise ValueError(f"--max-payload-mb must be > 0, got {args.max_payload_mb}")
        reward = build_reward(args.name, parse_params(args.param), args.device)
        server = RewardServer(reward, host=args.host, port=args.port,
                              token=args.token or os.environ.get(TOKEN_ENV) or None,
                              max_payload_bytes=int(args.max_payload_mb * 1024 * 1024), max_batch=args.max_batch,
                              max_wait_ms=args.max_wait_ms, request_timeout=args.request_timeout,
                              max_connections=args.max_connections, max_pixels=args.max_pixels,
                              max_audio_samples=args.max_audio_samples, verbose=args.verbose)
    except (ValueError, KeyError, ImportError, OSError) as exc:
        if args.debug:
            raise
        print(f"mmgrpo serve-reward: {exc}", file=sys.stderr)
        return 2
    print(f"serving reward {server.name!r} on {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # noqa: BLE001
        if args.debug:
            raise
        print(f"mmgrpo serve-reward: the server failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        server.httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(serve_main(sys.argv[1:]))
