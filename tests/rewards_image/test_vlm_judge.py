"""VLM judge against a real OpenAI-compatible HTTP server on 127.0.0.1 (http.server in a thread)."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from conftest import assert_reward_contract, random_images

from mmgrpo.rewards.image.vlm_judge import JudgeEndpointError, VLMJudgeReward, parse_json_field, parse_number


class JudgeServer:
    """A chat-completions endpoint whose reply is `answer(prompt_text, image)`; it can fail or stall first."""

    def __init__(self, answer, fail_first: int = 0, fail_code: int = 500, delay_s: float = 0.0):
        self.answer, self.fail_first, self.fail_code, self.delay_s = answer, fail_first, fail_code, delay_s
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append(body)
                    server.headers.append(dict(self.headers))
                    n = len(server.requests)
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": f"no route {self.path}"})
                if n <= server.fail_first:
                    return self._send(server.fail_code, {"error": "try again"})
                time.sleep(server.delay_s)
                content = body["messages"][-1]["content"]
                text = next(c["text"] for c in content if c["type"] == "text")
                url = next(c["image_url"]["url"] for c in content if c["type"] == "image_url")
                png = base64.b64decode(url.removeprefix("data:image/png;base64,"))
                from PIL import Image

                image = Image.open(io.BytesIO(png))
                self._send(200, {"id": "x", "object": "chat.completion", "model": body["model"], "choices": [
                    {"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": server.answer(text, image)}}]})

            def _send(self, code, obj):
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1/chat/completions"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def brightness_judge(text, image):
    """Scores mean brightness 0..10; proves the image arrived intact and the prompt was templated in."""
    assert "Answer with the number only" in text
    import numpy as np

    return f"Score: {np.asarray(image.convert('L'), dtype=np.float64).mean() / 255 * 10:.3f}"


def test_parsers_hand_computed():
    assert parse_number("I'd rate it 8 out of 10.", 0, 10) == 8.0
    assert parse_number("-1 then 3", 0, 10) == 3.0
    assert parse_number("no digits here", 0, 10) is None
    assert parse_json_field('```json\n{"score": 4, "why": "ok"}\n```', "score", 1, 5) == 4.0
    assert parse_json_field('Sure! {"score": "3.5"} hope that helps', "score", 1, 5) == 3.5
    assert parse_json_field('{"score": 9}', "score", 1, 5) is None  # out of range
    assert parse_json_field('{"rating": 2}', "score", 1, 5) is None
    assert parse_json_field("not json", "score", 1, 5) is None


def test_parse_number_takes_first_in_range():
    # "11/10, no wait, 7.5": numbers 11 (out), 10 (in) -> 10 is the first in range.
    assert parse_number("Score: 11/10, no wait, 7.5", 0, 10) == 10.0


def test_judge_scores_sent_images_and_is_batch_invariant(monkeypatch):
    monkeypatch.setenv("MMGRPO_TEST_JUDGE_KEY", "sk-local")
    images = torch.stack([torch.full((3, 16, 20), v) for v in (0.0, 0.25, 0.5, 1.0)])
    with JudgeServer(brightness_judge) as server:
        reward = VLMJudgeReward(VLMJudgeReward.Config(url=server.url, model="judge-1", api_key_env="MMGRPO_TEST_JUDGE_KEY",
                                                      concurrency=2))
        out = assert_reward_contract(reward, images, ["a", "b", "c", "d"])
    # brightness 0, 0.25*255 -> 64/255, 128/255, 1 -> scores 0, 2.51, 5.02, 10 -> normalized /10.
    torch.testing.assert_close(out, torch.tensor([0.0, 64 / 255, 128 / 255, 1.0]), atol=2e-4, rtol=0)
    body = server.requests[0]
    assert body["model"] == "judge-1" and body["temperature"] == 0.0
    assert server.headers[0]["Authorization"] == "Bearer sk-local"
    assert len(server.requests) == 4 + 4 + 4 + 4  # contract: call, repeat, batch again, then 4 one by one


def test_judge_json_mode_unparseable_and_raw_scale():
    replies = {"p0": '{"score": 4}', "p1": "I cannot judge this", "p2": '{"score": 5}'}
    answer = lambda text, image: next(v for k, v in replies.items() if f'"{k}"' in text)  # noqa: E731
    with JudgeServer(answer) as server:
        cfg = dict(url=server.url, parse="json", min_score=1, max_score=5, api_key_env=None)
        out = VLMJudgeReward(VLMJudgeReward.Config(**cfg, normalize=False))(random_images(3), ["p0", "p1", "p2"])
        # 4 and 5 raw; the prose reply has no JSON score -> NaN.
        assert out[0] == 4.0 and torch.isnan(out[1]) and out[2] == 5.0
        # normalized: (4 - 1) / (5 - 1) = 0.75
        assert VLMJudgeReward(VLMJudgeReward.Config(**cfg))(random_images(1), ["p0"]).item() == 0.75
        strict = VLMJudgeReward(VLMJudgeReward.Config(**cfg, on_unparseable="error"))
        with pytest.raises(ValueError, match="no score in .*I cannot judge"):
            strict(random_images(1), ["p1"])


def test_judge_retries_after_500_then_succeeds():
    with JudgeServer(lambda t, i: "7", fail_first=2) as server:
        reward = VLMJudgeReward(VLMJudgeReward.Config(url=server.url, max_retries=2, backoff_s=0.01, api_key_env=None))
        assert reward(random_images(1), ["x"]).item() == pytest.approx(0.7)
    assert len(server.requests) == 3  # 500, 500, 200


def test_judge_gives_up_after_retries_and_names_endpoint():
    with JudgeServer(lambda t, i: "7", fail_first=10, fail_code=503) as server:
        reward = VLMJudgeReward(VLMJudgeReward.Config(url=server.url, max_retries=1, backoff_s=0.01, api_key_env=None))
        with pytest.raises(JudgeEndpointError, match=rf"{server.url} failed after 2 attempts; last error: HTTP 503"):
            reward(random_images(1), ["x"])
    assert len(server.requests) == 2


def test_judge_client_error_is_not_retried():
    with JudgeServer(lambda t, i: "7", fail_first=10, fail_code=400) as server:
        reward = VLMJudgeReward(VLMJudgeReward.Config(url=server.url, max_retries=3, backoff_s=0.01, api_key_env=None))
        with pytest.raises(JudgeEndpointError, match="refused the request .*HTTP 400"):
            reward(random_images(1), ["x"])
    assert len(server.requests) == 1


def test_judge_timeout_is_retried_then_reported():
    with JudgeServer(lambda t, i: "7", delay_s=1.0) as server:
        reward = VLMJudgeReward(VLMJudgeReward.Config(url=server.url, timeout_s=0.2, max_retries=1, backoff_s=0.01,
                                                      api_key_env=None))
        start = time.monotonic()
        with pytest.raises(JudgeEndpointError, match=rf"{server.url} failed after 2 attempts; last error: .*timed out"):
            reward(random_images(1), ["x"])
        assert time.monotonic() - start < 1.5  # two 0.2 s timeouts, not two full 1 s replies
    assert len(server.requests) == 2


def test_judge_endpoint_down():
    with JudgeServer(lambda t, i: "7") as server:
        url = server.url
    # The server is shut down and its socket closed: connection refused on every attempt.
    reward = VLMJudgeReward(VLMJudgeReward.Config(url=url, max_retries=2, backoff_s=0.01, api_key_env=None))
    with pytest.raises(JudgeEndpointError, match=rf"{url} failed after 3 attempts; last error: .*(refused|Errno)"):
        reward(random_images(1), ["x"])


def test_judge_config_validation():
    with pytest.raises(ValueError, match="max_score"):
        VLMJudgeReward.Config(min_score=5, max_score=5)
    with pytest.raises(ValueError, match="http"):
        VLMJudgeReward.Config(url="127.0.0.1:8000")
    with pytest.raises(ValueError, match="{prompt}"):
        VLMJudgeReward.Config(prompt_template="rate it")
