"""String metrics: normalization, edit distance, WER/CER, bit-parallel LCS against the DP loop, ROUGE-L."""

import math
import random

import pytest

from mmgrpo.rewards.text.metrics import (
    char_error_rate,
    edit_distance,
    lcs_length,
    lcs_length_reference,
    normalize_text,
    rouge_l,
    word_error_rate,
)


def test_normalize_text_lowercases_and_strips_punctuation():
    assert normalize_text("Hello, WORLD!") == "hello world"
    assert normalize_text("Don't  stop\u2014now.") == "dont stop now"      # apostrophe dropped, em dash -> space
    assert normalize_text("\uff21\uff22\uff23") == "abc"                   # NFKC folds full-width letters
    assert normalize_text("  ...  ") == ""


def test_edit_distance_hand_cases():
    assert edit_distance("kitten", "sitting") == 3                          # k->s, e->i, +g
    assert edit_distance("", "abc") == 3 and edit_distance("abc", "") == 3
    assert edit_distance(["a", "b"], ["a", "b"]) == 0


def test_word_error_rate_hand_computed():
    # ref "the cat sat on the mat" (6 words); hyp "the cat sit on mat": 1 substitution + 1 deletion = 2/6
    assert word_error_rate("The cat sat on the mat.", "the cat sit on mat") == pytest.approx(2 / 6)
    # insertions can push WER above 1: ref "hi" (1 word), hyp "hi there you" -> 2 insertions = 2.0
    assert word_error_rate("hi", "hi there you") == pytest.approx(2.0)
    assert math.isnan(word_error_rate("  !! ", "anything"))                # empty reference: not applicable
    assert word_error_rate("Hello, world", "hello world") == 0.0           # normalization removes the difference
    # without normalization "Hello," != "hello": 1 substitution of 2 words
    assert word_error_rate("Hello, world", "hello world", normalize=False) == pytest.approx(0.5)


def test_char_error_rate_hand_computed():
    # "abcd" vs "abd": one deletion over 4 characters
    assert char_error_rate("abcd", "abd") == pytest.approx(0.25)
    # "ab cd" (5 chars incl. the space) vs "abcd": the deleted space counts: 1/5
    assert char_error_rate("ab cd", "abcd") == pytest.approx(0.2)


def test_lcs_bit_parallel_matches_dp_loop_reference():
    rng = random.Random(0)
    for _ in range(300):
        a = [rng.choice("abcd") for _ in range(rng.randint(0, 70))]   # > 64 symbols: multi-word big ints
        b = [rng.choice("abcde") for _ in range(rng.randint(0, 70))]
        assert lcs_length(a, b) == lcs_length_reference(a, b)
    assert lcs_length("ABCBDAB", "BDCABA") == 4                             # CLRS example: "BCBA"


def test_rouge_l_hand_computed():
    # pred "the cat sat on the mat" (6), ref "the cat is on the mat" (6); LCS "the cat on the mat" = 5
    # P = R = 5/6 -> F1 = 5/6
    assert rouge_l("the cat sat on the mat", "the cat is on the mat") == pytest.approx(5 / 6)
    # pred "cat" (1), ref "the cat sat" (3): LCS 1, P = 1, R = 1/3, F1 = 2 * 1 * 1/3 / (4/3) = 0.5
    assert rouge_l("Cat!", "the cat sat") == pytest.approx(0.5)
    # beta = 2 weighs recall: F = 5 P R / (R + 4 P) = 5 * 1/3 / (1/3 + 4) = 5/13
    assert rouge_l("cat", "the cat sat", beta=2.0) == pytest.approx(5 / 13)
    assert rouge_l("", "the cat") == 0.0 and rouge_l("dog", "the cat") == 0.0
