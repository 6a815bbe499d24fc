"""`RemoteReward`: a reward whose scores come from a reward server (`server.py`) over HTTP.

The client splits the samples into batches of at most `batch_size` (a groupwise reward's groups are never
split: batches are made of whole groups), sends each as a `payload` request, and retries failures that may
pass (connection refused or reset, timeouts, HTTP 5xx) `retries` times, waiting `backoff * 2**k` seconds
before retry k. A 4xx answer (bad token, malformed or oversized payload, the reward rejecting its inputs)
is not retried. When it gives up it raises `RemoteRewardError` naming the server URL and the last failure.

The bearer token goes to the configured URL and nowhere else: redirects are refused (a 3xx answer is an
error naming the URL, the status and where it pointed; following it would send the token to another
address and turn a 302'd POST into a GET without its body), and the `http_proxy`/`https_proxy`
environment variables are ignored unless `trust_env_proxy: true` (a proxy on a plain-http URL sees the
token; opt in only for a proxy you trust, or use an https URL).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from .payload import decode_scores, encode_request, is_column


class RemoteRewardError(RuntimeError):
    """The reward server could not be reached or refused the request; names the URL."""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Never follow a redirect: urllib then raises the 3xx as an HTTPError, reported by `_request`."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001 - urllib's signature
        return None


def _opener(trust_env_proxy: bool) -> urllib.request.OpenerDirector:
    """urllib without redirects, and without the environment's proxies unless `trust_env_proxy`."""
    proxies = urllib.request.ProxyHandler() if trust_env_proxy else urllib.request.ProxyHandler({})
    return urllib.request.build_opener(proxies, _NoRedirects())


def _slice(value: Any, idx: list[int]) -> Any:
    if isinstance(value, Tensor):
        return value[torch.tensor(idx, dtype=torch.long)]
    if hasattr(value, "shape") and hasattr(value, "__getitem__"):  # numpy
        return value[idx]
    return [value[i] for i in idx]


def batches_of(group_ids: Tensor, batch_size: int, groupwise: bool) -> list[list[int]]:
    """Sample indices per request: consecutive chunks of `batch_size`, or for groupwise rewards whole groups
    packed greedily in first-appearance order (a group larger than `batch_size` is sent alone)."""
    n = group_ids.shape[0]
    if not groupwise:
        return [list(range(s, min(s + batch_size, n))) for s in range(0, n, batch_size)]
    members: dict[int, list[int]] = {}
    for i, g in enumerate(group_ids.tolist()):
        members.setdefault(int(g), []).append(i)
    out: list[list[int]] = []
    for idx in members.values():
        if out and len(out[-1]) + len(idx) <= batch_size:
            out[-1] += idx
        else:
            out.append(list(idx))
    return out


class RemoteReward:
    """Scores from a reward server; behaves like the served reward (same `[N]` scores, NaN = n/a)."""

    name = "remote"

    @dataclass
    class Config:
        url: str = "http://127.0.0.1:8765"  # the server's base URL (POST {url}/score)
        token: str | None = None  # bearer token, if the server requires one
        batch_size: int = 32  # samples per request
        timeout: float = 120.0  # seconds to wait for one response
        retries: int = 3  # extra attempts after a connection error, timeout or 5xx
        backoff: float = 0.5  # seconds before the first retry; doubles each retry
        groupwise: bool = False  # the served reward is groupwise: send whole groups together
        outputs: Literal["auto", "text", "images", "audio", "tensor"] = "auto"  # how to encode outputs
        image_format: Literal["png", "safetensors"] = "png"  # png: 8-bit, small; safetensors: exact floats
        audio_format: Literal["wav", "safetensors"] = "wav"  # wav: float32 WAV per clip (needs a rate)
        sample_rate: int | None = None  # audio rate when metadata carries no sample_rate
        shared_metadata: list[str] = field(default_factory=list)  # keys never split per sample
        trust_env_proxy: bool = False  # use http(s)_proxy from the environment (a proxy may see the token)

        def __post_init__(self) -> None:
            if not self.url.startswith(("http://", "https://")):
                raise ValueError(f"url must start with http:// or https://, got {self.url!r}")
            if self.batch_size < 1 or self.retries < 0 or self.timeout <= 0 or self.backoff < 0:
                raise ValueError("batch_size >= 1, retries >= 0, timeout > 0 and backoff >= 0 are required; got "
                                 f"{self.batch_size}, {self.retries}, {self.timeout}, {self.backoff}")

    def __init__(self, cfg: Config | None = None):
        self.cfg = cfg = cfg or self.Config()
        self.url = cfg.url.rstrip("/")
        self.name = f"remote:{self.url}"
        self.groupwise = cfg.groupwise

    def health(self) -> dict:
        """`GET /health` of the server (with retries): its reward's name and settings."""
        return json.loads(self._request("GET", "/health", None))

    def _request(self, method: str, path: str, body: bytes | None) -> bytes:
        headers = {"Content-Type": "application/json"}
        if self.cfg.token:
            headers["Authorization"] = f"Bearer {self.cfg.token}"
        last = "no attempt made"
        for attempt in range(self.cfg.retries + 1):
            if attempt:
                time.sleep(self.cfg.backoff * 2 ** (attempt - 1))
            req = urllib.request.Request(self.url + path, data=body, headers=headers, method=method)
            try:
                with _opener(bool(self.cfg.trust_env_proxy)).open(req, timeout=self.cfg.timeout) as resp:
                    return resp.read()
            except urllib.error.HTTPError as exc:
                if 300 <= exc.code < 400:
                    target = exc.headers.get("Location", "nowhere") if exc.headers else "nowhere"
                    raise RemoteRewardError(
                        f"reward server {self.url} answered {method} {path} with a redirect (HTTP {exc.code} to "
                        f"{target[:200]!r}); RemoteReward does not follow redirects (the bearer token would go "
                        "to another address): set url to the server's own address") from None
                detail = exc.read().decode("utf-8", "replace")[:500]
                try:
                    detail = json.loads(detail).get("error", detail)
                except (json.JSONDecodeError, AttributeError):
                    pass
                if exc.code < 500:
                    raise RemoteRewardError(f"reward server {self.url} refused {method} {path}: HTTP {exc.code}: "
                                            f"{detail}") from None
                last = f"HTTP {exc.code}: {detail}"
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
                last = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
        raise RemoteRewardError(f"reward server {self.url} did not answer {method} {path} after "
                                f"{self.cfg.retries + 1} attempts; last error: {last}. Is it running "
                                "(mmgrpo serve-reward NAME --port ...)?")

    def __call__(self, outputs: Any, conds: list, group_ids: Tensor | None = None, **metadata: Any) -> Tensor:
        n = len(conds)
        gids = torch.arange(n) if group_ids is None else torch.as_tensor(group_ids).reshape(-1)
        if gids.shape[0] != n:
            raise ValueError(f"{self.name}: group_ids has {gids.shape[0]} entries for {n} conds")
        shared_keys = tuple(self.cfg.shared_metadata)
        columns = {k for k, v in metadata.items() if k not in shared_keys and is_column(v, n)}
        scores = torch.empty(n, dtype=torch.float32)
        for idx in batches_of(gids, self.cfg.batch_size, self.groupwise):
            meta = {k: (_slice(v, idx) if k in columns else v) for k, v in metadata.items()}
            body = encode_request(_slice(outputs, idx), [conds[i] for i in idx], gids[idx], meta,
                                  shared_keys=tuple(k for k in metadata if k not in columns),
                                  kind=self.cfg.outputs,
                                  image_format=self.cfg.image_format, audio_format=self.cfg.audio_format,
                                  sample_rate=self.cfg.sample_rate)
            scores[torch.tensor(idx)] = decode_scores(self._request("POST", "/score", body), len(idx))
        return scores
