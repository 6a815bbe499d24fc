"""The reward server in a real process on loopback, and the RemoteReward client against it."""

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
import torch

from mmgrpo.rewards.payload import decode_request, encode_request
from mmgrpo.rewards.remote import RemoteReward, RemoteRewardError, batches_of
from mmgrpo.rewards.server import RewardServer, is_loopback, merge_requests
from mmgrpo.rewards.text.accuracy import AnswerAccuracy

ACCURACY = "mmgrpo.rewards.text.accuracy:AnswerAccuracy"
TOKEN = "s3cret-token"
OUTS = ["<answer>4</answer>", "<answer>(B)</answer>", "\\boxed{\\frac{1}{2}}", "five", "<answer>3.14</answer>",
        "<answer>Paris</answer>", "12", "<answer>x^2+2x+1</answer>", "<answer>C</answer>", "9"]
CONDS = [{"answer": "4"}, {"answer": "C"}, {"answer": "0.5"}, {"answer": "5"}, {"prompt": "none"},
         {"answer": "paris"}, {"answer": "12"}, {"answer": "(x+1)^2"}, {"answer": "C"}, {"answer": "8"}]


def start_server(*args: str) -> tuple[subprocess.Popen, str]:
    """`python -m mmgrpo.rewards.server ... --port 0`; returns the process and the URL it prints."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "mmgrpo.rewards.server", *args, "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()
    if "serving reward" not in line:
        proc.kill()
        raise RuntimeError(f"server did not start: {line!r} {proc.stderr.read()}")
    return proc, line.strip().rsplit(" ", 1)[-1]


@pytest.fixture(scope="module")
def server():
    proc, url = start_server(ACCURACY, "--token", TOKEN, "--param", "rel_tol=0.001", "--max-payload-mb", "0.01")
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def post(url: str, body: bytes, token: str | None = TOKEN) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        req = urllib.request.Request(url + "/score", data=body, headers=headers)
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_remote_scores_equal_in_process_scores(server):
    local = AnswerAccuracy(AnswerAccuracy.Config(rel_tol=0.001))(OUTS, CONDS)
    remote = RemoteReward(RemoteReward.Config(url=server, token=TOKEN, batch_size=3))
    assert torch.allclose(remote(OUTS, CONDS), local, equal_nan=True)          # 4 requests of <= 3 samples
    assert remote.health()["name"] == "answer_accuracy"
    # metadata columns are split with the samples: ground truth as a keyword column
    answers = [c.get("answer") for c in CONDS]
    assert torch.allclose(remote(OUTS, ["p"] * 10, answer=answers), local, equal_nan=True)


def test_wrong_or_missing_token_is_refused_with_401(server):
    body = encode_request(OUTS[:1], CONDS[:1], [0])
    assert post(server, body, token="wrong")[0] == 401
    assert post(server, body, token=None)[0] == 401
    with pytest.raises(RemoteRewardError, match=rf"{server}.*HTTP 401"):
        RemoteReward(RemoteReward.Config(url=server, token="wrong", retries=3))(OUTS[:1], CONDS[:1])
    assert post(server, body)[0] == 200


def test_malformed_and_oversized_payloads_get_4xx_and_the_server_keeps_serving(server):
    status, reply = post(server, b'{"format": "mmgrpo.reward/1", "n": 1}')
    assert status == 400 and "malformed payload" in reply["error"]
    assert post(server, b"\x80\x81 not json")[0] == 400
    big = encode_request(["x" * 20000], [{"answer": "x"}], [0])               # > 0.01 MiB limit
    status, reply = post(server, big)
    assert status == 413 and "exceeds" in reply["error"]
    bad_type = encode_request(["1"], [{"answer": "1", "problem_type": "essay"}], [0])
    status, reply = post(server, bad_type)                                     # the reward raises
    assert status == 422 and "problem_type" in reply["error"]
    status, reply = post(server, encode_request(OUTS[:2], CONDS[:2], [0, 0]))
    assert status == 200 and reply["scores"] == [1.0, 0.0]


def test_two_clients_at_once_are_both_answered_correctly(server):
    local = AnswerAccuracy(AnswerAccuracy.Config(rel_tol=0.001))(OUTS, CONDS)
    results: dict[int, torch.Tensor] = {}
    halves = {0: slice(0, 5), 1: slice(5, 10)}

    def run(k: int) -> None:
        client = RemoteReward(RemoteReward.Config(url=server, token=TOKEN, batch_size=2))
        results[k] = torch.cat([client(OUTS[halves[k]], CONDS[halves[k]]) for _ in range(3)])

    threads = [threading.Thread(target=run, args=(k,)) for k in halves]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for k, sl in halves.items():
        assert torch.allclose(results[k], local[sl].repeat(3), equal_nan=True)


def test_server_down_gives_a_clear_error_after_the_retries():
    with socket.socket() as s:                  # a free loopback port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    client = RemoteReward(RemoteReward.Config(url=url, retries=2, backoff=0.05, timeout=2))
    start = time.monotonic()
    with pytest.raises(RemoteRewardError, match=rf"reward server {url} did not answer .* after 3 attempts"):
        client(["x"], [{"answer": "x"}])
    assert time.monotonic() - start >= 0.05 + 0.1                             # waited 0.05 then 0.1 s


def test_cli_refuses_non_loopback_without_token():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.1")
    with pytest.raises(ValueError, match="needs a bearer token"):
        RewardServer(AnswerAccuracy(), host="0.0.0.0")
    proc = subprocess.run([sys.executable, "-m", "mmgrpo.rewards.server", ACCURACY, "--host", "0.0.0.0"],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "MMGRPO_REWARD_TOKEN": ""})
    assert proc.returncode == 2 and "needs a bearer token" in proc.stderr


def test_micro_batching_merges_concurrent_requests_and_isolates_a_failing_one():
    reward = AnswerAccuracy()
    with RewardServer(reward, max_wait_ms=1000, max_batch=64) as srv:
        out: dict[str, object] = {}

        def send(key: str, outs, conds):
            out[key] = post(srv.url, encode_request(outs, conds, [0] * len(outs)), token=None)

        jobs = [("a", OUTS[:4], CONDS[:4]), ("b", OUTS[4:], CONDS[4:])]
        threads = [threading.Thread(target=send, args=job) for job in jobs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert srv.calls == 1                                                    # one reward call for both
        local = reward(OUTS, CONDS)
        got = [float("nan") if v is None else v for v in out["a"][1]["scores"] + out["b"][1]["scores"]]
        assert torch.allclose(torch.tensor(got), local, equal_nan=True)

        bad = ("bad", ["1"], [{"answer": "1", "problem_type": "essay"}])
        threads = [threading.Thread(target=send, args=job) for job in (jobs[0], bad)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert out["bad"][0] == 422 and out["a"][0] == 200
        assert torch.allclose(torch.tensor([float("nan") if v is None else v for v in out["a"][1]["scores"]]),
                              local[:4], equal_nan=True)


def test_merge_requests_offsets_group_ids_hand_computed():
    a = decode_request(encode_request(["x", "y", "z"], ["p"] * 3, [5, 5, 9], {"answer": ["1", "2", "3"]}))
    b = decode_request(encode_request(["u", "v"], ["q"] * 2, [0, 1], {"answer": ["4", "5"]}))
    outputs, conds, gids, meta = merge_requests([a, b])
    # a: [5,5,9] - 5 + 0 -> [0,0,4], next offset 5; b: [0,1] - 0 + 5 -> [5,6]
    assert gids.tolist() == [0, 0, 4, 5, 6]
    assert outputs == ["x", "y", "z", "u", "v"] and meta["answer"] == ["1", "2", "3", "4", "5"]


class GroupRank:
    """A groupwise reward: the rank of each sample's length within its group, 0 = shortest (test fixture)."""

    name = "group_rank"
    groupwise = True

    def __call__(self, outputs, conds, group_ids=None, **metadata):
        lengths = torch.tensor([len(o) for o in outputs], dtype=torch.float32)
        out = torch.empty_like(lengths)
        for g in group_ids.unique():
            idx = (group_ids == g).nonzero().flatten()
            out[idx] = lengths[idx].argsort().argsort().float()
        return out


def test_groupwise_rewards_get_whole_groups():
    assert batches_of(torch.tensor([0, 0, 1, 1, 1, 2, 2]), 4, groupwise=True) == [[0, 1], [2, 3, 4], [5, 6]]
    assert batches_of(torch.tensor([0, 1, 0, 1]), 2, groupwise=True) == [[0, 2], [1, 3]]
    assert batches_of(torch.arange(5), 2, groupwise=False) == [[0, 1], [2, 3], [4]]
    outs = ["aaa", "a", "aa", "bb", "b", "bbbb", "cc", "c", "ccc"]
    gids = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    local = GroupRank()(outs, [""] * 9, group_ids=gids)
    with RewardServer(GroupRank(), max_wait_ms=1) as srv:
        remote = RemoteReward(RemoteReward.Config(url=srv.url, batch_size=4, groupwise=True))
        assert torch.equal(remote(outs, [""] * 9, group_ids=gids), local)
