"""String metrics shared by text and audio rewards: normalization, edit distance (WER/CER), LCS, ROUGE-L.

Normalization used for WER, CER and ROUGE-L (`normalize_text`): Unicode NFKC, lowercase (`casefold`),
apostrophes removed ("don't" -> "dont"), every other punctuation or symbol character (Unicode categories
P* and S*) replaced by a space, whitespace collapsed. Numbers are not spelled out ("2" != "two") and no
spelling variants are merged; both sides of a comparison get the same treatment.

WER = word-level Levenshtein distance (substitutions + deletions + insertions) / reference word count;
CER = the same over characters of the normalized strings (spaces count as characters).
ROUGE-L (Lin, 2004, "ROUGE: A Package for Automatic Evaluation of Summaries"): with `L = LCS(pred, ref)`
over normalized words, `P = L/|pred|`, `R = L/|ref|`, `F = (1+b^2) P R / (R + b^2 P)` (b = 1: F1).
The LCS length uses the bit-parallel algorithm of Allison & Dix (1986) / Hyyro (2004) on Python ints;
`lcs_length_reference` is the plain dynamic program it is tested against.
"""

from __future__ import annotations

import unicodedata
from typing import Hashable, Sequence

_APOSTROPHES = "'\u2019\u2018\u02bc`"


def normalize_text(text: str) -> str:
    """NFKC, casefold, drop apostrophes, punctuation/symbols -> space, collapse whitespace.

    >>> normalize_text("  Hello, World!  It's   2.5\u00b0C ")
    'hello world its 2 5 c'
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    out = []
    for ch in text:
        if ch in _APOSTROPHES:
            continue
        cat = unicodedata.category(ch)
        out.append(" " if cat[0] in "PS" or ch.isspace() else ch)
    return " ".join("".join(out).split())


def edit_distance(ref: Sequence[Hashable], hyp: Sequence[Hashable]) -> int:
    """Levenshtein distance (unit costs) between two sequences; O(len(ref) * len(hyp)) time, O(len(hyp)) memory."""
    prev = list(range(len(hyp) + 1))  # distances from ref[:0] to hyp[:j]
    for i, r in enumerate(ref, start=1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, start=1):
            cur[j] = min(prev[j] + 1,            # delete r
                         cur[j - 1] + 1,         # insert h
                         prev[j - 1] + (r != h))  # substitute (or match)
        prev = cur
    return prev[-1]


def word_error_rate(reference: str, hypothesis: str, normalize: bool = True) -> float:
    """Word error rate of `hypothesis` against `reference` (can exceed 1); NaN for an empty reference."""
    if normalize:
        reference, hypothesis = normalize_text(reference), normalize_text(hypothesis)
    ref, hyp = reference.split(), hypothesis.split()
    if not ref:
        return float("nan")
    return edit_distance(ref, hyp) / len(ref)


def char_error_rate(reference: str, hypothesis: str, normalize: bool = True) -> float:
    """Character error rate (spaces included) of `hypothesis` against `reference`; NaN for an empty reference."""
    if normalize:
        reference, hypothesis = normalize_text(reference), normalize_text(hypothesis)
    else:
        reference, hypothesis = " ".join(reference.split()), " ".join(hypothesis.split())
    if not reference:
        return float("nan")
    return edit_distance(reference, hypothesis) / len(reference)


def lcs_length(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """Length of the longest common subsequence, bit-parallel: O(len(b)) big-int operations.

    Bit i of `v` is 1 while row i of the DP has not gained a match yet; each symbol of `b` updates all
    rows at once with `v = (v + u) | (v - u)`, `u = v & match[c]` (Hyyro 2004, eq. for LLCS).
    """
    m = len(a)
    if m == 0 or len(b) == 0:
        return 0
    match: dict[Hashable, int] = {}
    for i, x in enumerate(a):
        match[x] = match.get(x, 0) | (1 << i)
    full = (1 << m) - 1
    v = full
    for y in b:
        u = v & match.get(y, 0)
        v = ((v + u) | (v - u)) & full
    return m - bin(v).count("1")


def lcs_length_reference(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """The textbook O(len(a) * len(b)) dynamic program for the LCS length (the loop reference)."""
    dp = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            dp[i][j] = dp[i - 1][j - 1] + 1 if a[i - 1] == b[j - 1] else max(dp[i - 1][j], dp[i][j - 1])
    return dp[-1][-1]


def rouge_l(prediction: str, reference: str, beta: float = 1.0, normalize: bool = True) -> float:
    """ROUGE-L F-measure over words; 0 when either side is empty after normalization.

    >>> round(rouge_l("the cat sat on the mat", "the cat is on the mat"), 4)  # LCS 5 of 6 and 6
    0.8333
    """
    if normalize:
        prediction, reference = normalize_text(prediction), normalize_text(reference)
    pred, ref = prediction.split(), reference.split()
    if not pred or not ref:
        return 0.0
    lcs = lcs_length(ref, pred)
    if lcs == 0:
        return 0.0
    p, r = lcs / len(pred), lcs / len(ref)
    return (1 + beta**2) * p * r / (r + beta**2 * p)
