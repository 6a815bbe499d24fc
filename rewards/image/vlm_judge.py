"""VLM-as-judge reward: ask an OpenAI-compatible chat endpoint to score each image against its prompt.

The image goes as a base64 PNG data URL in a `/v1/chat/completions` request (the OpenAI vision message
format, served by vLLM, SGLang, TGI, llama.cpp, Ollama and the OpenAI API). The reply is parsed as the
first number inside [min_score, max_score], or as a field of a JSON object, and optionally mapped to
[0, 1]. Transient failures (connection errors, timeouts, HTTP 429 and 5xx) are retried with exponential
backoff; then the error names the endpoint. Standard library only (urllib).
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import re
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from .inputs import check_count, prompts_of, to_image_batch, to_uint8_hwc

DEFAULT_TEMPLATE = (
    "You are judging an image generated from the prompt: \"{prompt}\".\n"
    "Rate how well the image follows the prompt and how good it looks, from {min_score} (worst) to "
    "{max_score} (best). Answer with the number only."
)
NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


def parse_number(text: str, lo: float, hi: float) -> float | None:
    """The first number in `text` that lies in [lo, hi] ("I'd say 8/10" -> 8 for [0, 10]); None if none."""
    for match in NUMBER.finditer(text):
        value = float(match.group())
        if lo <= value <= hi:
            return value
    return None


def parse_json_field(text: str, key: str, lo: float, hi: float) -> float | None:
    """`key` of the JSON object in `text` (code fences and surrounding prose allowed) if numeric and in [lo, hi]."""
    body = re.sub(r"^```(?:json)?\s*|\s*```$", "", text.strip())
    candidates = [body]
    start, end = body.find("{"), body.rfind("}")
    if 0 <= start < end:
        candidates.append(body[start : end + 1])
    for cand in candidates:
        try:
            obj = json.loads(cand)
        except (json.JSONDecodeError, ValueError):
            continue
        if isinstance(obj, dict) and key in obj:
            try:
                value = float(obj[key])
            except (TypeError, ValueError):
                return None
            return value if lo <= value <= hi and math.isfinite(value) else None
    return None


def png_data_url(image_hwc: Any) -> str:
    """uint8 `[H,W,3]` array -> "data:image/png;base64,..."."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image_hwc).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class JudgeEndpointError(RuntimeError):
    """The judge endpoint could not be reached or answered with an error; the message names it."""


class VLMJudgeReward:
    """A chat VLM's score for each (image, prompt): `[N]` float32, NaN where the reply held no valid score."""

    name = "vlm_judge"
    reads_media = ("outputs:images",)  # decoded media it reads (reward server, payload.media_reads)

    @dataclass
    class Config:
        url: str = "http://127.0.0.1:8000/v1/chat/completions"  # the OpenAI-compatible chat completions endpoint
        model: str = "default"  # model name sent in each request (as the server knows it)
        prompt_template: str = DEFAULT_TEMPLATE  # user text; {prompt}, {min_score}, {max_score} are filled in
        system_prompt: str | None = None  # optional system message
        parse: Literal["number", "json"] = "number"  # number: first number in range; json: a field of a JSON reply
        json_field: str = "score"  # the field read when parse is json
        min_score: float = 0.0  # lowest valid score
        max_score: float = 10.0  # highest valid score
        normalize: bool = True  # map [min_score, max_score] linearly to [0, 1]
        timeout_s: float = 60.0  # per-request timeout in seconds
        max_retries: int = 3  # retries after a connection error, timeout, HTTP 429 or 5xx
        backoff_s: float = 1.0  # wait before retry k (k = 0, 1, ...) is backoff_s * 2**k
        max_tokens: int = 32  # completion budget for the reply
        temperature: float = 0.0  # sampling temperature (0: the judge's most likely answer)
        api_key_env: str | None = "OPENAI_API_KEY"  # environment variable with the bearer token; unset/null = no auth
        concurrency: int = 4  # requests in flight at once
        on_unparseable: Literal["nan", "error"] = "nan"  # a reply without a valid score: NaN, or raise
        extra_body: dict = field(default_factory=dict)  # extra request fields (e.g. {"top_p": 1.0, "seed": 0})

        def __post_init__(self) -> None:
            if not self.max_score > self.min_score:
                raise ValueError(f"max_score ({self.max_score}) must be > min_score ({self.min_score})")
            if not self.url.startswith(("http://", "https://")):
                raise ValueError(f"url must start with http:// or https://, got {self.url!r}")
            if self.timeout_s <= 0 or self.max_retries < 0 or self.backoff_s < 0 or self.concurrency < 1:
                raise ValueError("timeout_s must be > 0, max_retries >= 0, backoff_s >= 0 and concurrency >= 1")
            if "{prompt}" not in self.prompt_template:
                raise ValueError("prompt_template must contain {prompt}")

    def __init__(self, cfg: Config | None = None):
        self.cfg = cfg or self.Config()
        self.last_replies: list[str] = []  # raw judge replies of the last call (for logging and debugging)

    def request_body(self, prompt: str, data_url: str) -> dict:
        c = self.cfg
        text = c.prompt_template.format(prompt=prompt, min_score=_fmt(c.min_score), max_score=_fmt(c.max_score))
        messages: list[dict] = [{"role": "system", "content": c.system_prompt}] if c.system_prompt else []
        messages.append({"role": "user", "content": [
            {"type": "text", "text": text},
            {"type": "image_url", "image_url": {"url": data_url}},
        ]})
        return {"model": c.model, "messages": messages, "max_tokens": c.max_tokens, "temperature": c.temperature,
                **c.extra_body}

    def post(self, body: dict) -> str:
        """POST one request with retries; returns the reply text (`choices[0].message.content`)."""
        c = self.cfg
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(c.api_key_env) if c.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        last = ""
        for attempt in range(c.max_retries + 1):
            if attempt:
                time.sleep(c.backoff_s * 2 ** (attempt - 1))
            try:
                req = urllib.request.Request(c.url, data=data, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=c.timeout_s) as resp:
                    payload = resp.read()
            except urllib.error.HTTPError as exc:
                detail = exc.read()[:300].decode(errors="replace")
                last = f"HTTP {exc.code}: {detail}"
                if exc.code == 429 or exc.code >= 500:
                    continue
                raise JudgeEndpointError(f"reward {self.name!r}: endpoint {c.url} refused the request ({last})") from exc
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                last = f"{type(reason).__name__}: {reason}"
                continue
            try:
                return json.loads(payload)["choices"][0]["message"]["content"] or ""
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                raise JudgeEndpointError(
                    f"reward {self.name!r}: endpoint {c.url} did not answer like an OpenAI chat completion "
                    f"(expected choices[0].message.content): {payload[:300]!r}") from exc
        raise JudgeEndpointError(
            f"reward {self.name!r}: endpoint {c.url} failed after {c.max_retries + 1} attempts; last error: {last}")

    def score(self, reply: str) -> float:
        c = self.cfg
        if c.parse == "json":
            value = parse_json_field(reply, c.json_field, c.min_score, c.max_score)
        else:
            value = parse_number(reply, c.min_score, c.max_score)
        if value is None:
            if c.on_unparseable == "error":
                raise ValueError(f"reward {self.name!r}: no score in [{c.min_score}, {c.max_score}] "
                                 f"({c.parse}) in the reply of {c.url}: {reply[:200]!r}")
            return float("nan")
        return (value - c.min_score) / (c.max_score - c.min_score) if c.normalize else value

    def __call__(self, outputs: Any, conds: list, **metadata: Any) -> Tensor:
        images = to_image_batch(outputs)  # [N,3,H,W] in [0,1]
        check_count(images.shape[0], conds, self.name)
        prompts = prompts_of(conds)
        pixels = to_uint8_hwc(images).numpy()  # [N,H,W,3] uint8
        bodies = [self.request_body(p, png_data_url(img)) for p, img in zip(prompts, pixels)]
        with ThreadPoolExecutor(max_workers=min(self.cfg.concurrency, max(len(bodies), 1))) as pool:
            self.last_replies = list(pool.map(self.post, bodies))
        return torch.tensor([self.score(r) for r in self.last_replies], dtype=torch.float32)


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)
