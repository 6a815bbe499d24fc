"""Answer accuracy: 1 if the completion's answer matches the ground truth, else 0 (verifiable reward).

The answer is extracted (`answers.extract_answer`: `<answer>` tag, else `\\boxed{}`, else the whole
completion) and compared by problem type, as Video-R1 (Feng et al., 2025) scores mixed datasets:
`choice` (option letter), `numeric` (tolerance), `math` (sympy equivalence, string match without sympy),
`exact` (normalized string), and two graded types: `ocr` (`max(0, 1 - WER)`) and `free_form` (ROUGE-L F1).
With `mode="auto"` each sample's type is its `problem_type` (metadata column or `conds[i]["problem_type"]`,
Video-R1 names accepted: "multiple choice", "numerical", "math", "OCR", "free-form"), else inferred from the
ground truth: a lone letter A-J -> choice, a number -> numeric, a parsable math expression -> math, else exact.
Ground truth: `answer` (see `inputs.per_sample`); a sample without one scores NaN.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from .answers import choice_letter, extract_answer, normalize_answer, numbers_close, parse_number
from .inputs import completion_texts, per_sample
from .math_expr import MathParseError, math_equivalent, parse_math, sympy_available
from .metrics import rouge_l, word_error_rate

Mode = Literal["auto", "exact", "numeric", "choice", "math", "ocr", "free_form"]
PROBLEM_TYPES = {"multiple choice": "choice", "multiple_choice": "choice", "choice": "choice",
                 "numerical": "numeric", "numeric": "numeric", "math": "math", "ocr": "ocr",
                 "free-form": "free_form", "free_form": "free_form", "exact": "exact"}


def infer_mode(truth: str) -> str:
    """The comparison a ground-truth string calls for, when no problem type is given."""
    t = str(truth).strip()
    if re.fullmatch(r"\(?[A-J]\)?\.?", t):
        return "choice"
    if parse_number(t) is not None and re.fullmatch(r"[-+$\d.,/%\s]+", t):
        return "numeric"
    if sympy_available():
        try:
            parse_math(t)
            return "math"
        except (MathParseError, ValueError, TypeError, ZeroDivisionError):
            pass
    return "exact"


def numeric_value(text: str) -> float | None:
    """The number an answer states: a plain number as is; else, with sympy, the value of a numeric math
    expression (`\\frac{1}{2}`, `x = 2^3`); else the last number in the text (`answers.parse_number`)."""
    s = str(text).strip()
    if parse_number(s) is not None and re.fullmatch(r"[-+$\d.,/%\s]+", s):
        return parse_number(s)
    if sympy_available():
        try:
            value = parse_math(s)
            if value.is_number and value.is_real:
                return float(value)
        except (MathParseError, ValueError, TypeError, ZeroDivisionError, OverflowError):
            pass
    return parse_number(s)


def score_answer(answer: str, truth: Any, mode: str, rel_tol: float = 1e-4, abs_tol: float = 1e-6) -> float:
    """Score one extracted answer against one ground truth under `mode` (not "auto"): in [0, 1]."""
    truth = str(truth)
    if mode == "exact":
        return float(normalize_answer(answer) == normalize_answer(truth))
    if mode == "numeric":
        p, g = numeric_value(answer), numeric_value(truth)
        if g is None:
            raise ValueError(f"numeric ground truth {truth!r} holds no number")
        return float(p is not None and numbers_close(p, g, rel_tol, abs_tol))
    if mode == "choice":
        g = choice_letter(truth)
        if g is None:
            raise ValueError(f"multiple-choice ground truth {truth!r} names no option letter A-J")
        return float(choice_letter(answer) == g)
    if mode == "math":
        same = math_equivalent(answer, truth) if sympy_available() else None
        return float(same) if same is not None else float(normalize_answer(answer) == normalize_answer(truth))
    if mode == "ocr":
        wer = word_error_rate(truth, answer)
        return float("nan") if wer != wer else max(0.0, 1.0 - wer)
    if mode == "free_form":
        return rouge_l(answer, truth)
    raise ValueError(f"unknown answer mode {mode!r}; valid: exact, numeric, choice, math, ocr, free_form")


class AnswerAccuracy:
    """1/0 answer correctness by problem type (choice, numeric, math, exact; graded OCR and free-form)."""

    name = "answer_accuracy"
    reads_media = ()  # text outputs: no decoded images/audio anywhere (reward server, payload.media_reads)

    @dataclass
    class Config:
        mode: Mode = "auto"  # comparison for every sample; "auto" = per-sample problem_type or inferred
        answer_key: str = "answer"  # ground-truth key in metadata columns or conds[i]
        extract: bool = True  # take the <answer>/\boxed{} content; False compares the whole completion
        rel_tol: float = 1e-4  # numeric: relative tolerance
        abs_tol: float = 1e-6  # numeric: absolute tolerance

        def __post_init__(self) -> None:
            if self.rel_tol < 0 or self.abs_tol < 0:
                raise ValueError(f"rel_tol and abs_tol must be >= 0, got {self.rel_tol}, {self.abs_tol}")

    def __init__(self, cfg: Config | None = None):
        self.cfg = cfg or self.Config()

    def __call__(self, outputs: Any, conds: list, group_ids: Tensor | None = None, **metadata: Any) -> Tensor:
        texts = completion_texts(outputs)
        n = len(texts)
        truths = per_sample(conds, metadata, self.cfg.answer_key, n, self.name)
        types = (per_sample(conds, metadata, "problem_type", n, self.name) if self.cfg.mode == "auto"
                 else [None] * n)
        scores = torch.full((n,), float("nan"), dtype=torch.float32)
        for i, (text, truth, ptype) in enumerate(zip(texts, truths, types)):
            if truth is None:
                continue
            mode = self.cfg.mode
            if mode == "auto":
                if ptype is not None and str(ptype).strip().lower() not in PROBLEM_TYPES:
                    raise ValueError(f"{self.name}: sample {i} has problem_type {ptype!r}; "
                                     f"valid: {sorted(PROBLEM_TYPES)}")
                mode = PROBLEM_TYPES[str(ptype).strip().lower()] if ptype is not None else infer_mode(truth)
            answer = extract_answer(text) if self.cfg.extract else text.strip()
            scores[i] = score_answer(answer, truth, mode, self.cfg.rel_tol, self.cfg.abs_tol)
        return scores
