"""Answer extraction and comparison: tagged/boxed answers, exact strings, numbers, choice letters, math.

Extraction (`extract_answer`): the content of the last `<answer>...</answer>`, else of the last
`\\boxed{...}` (balanced braces), else the whole completion. Comparisons:
- exact: `normalize_answer` on both sides (strip, casefold, whitespace collapsed, surrounding `$` and a
  trailing period removed);
- numeric: the number in each side (`parse_number`: the whole string, else the last number in it; thousands
  separators, fractions `a/b` and a trailing `%` are understood, `%` is not divided by 100) compared as
  `|p - g| <= abs_tol + rel_tol * |g|` (the `math.isclose` rule with the tolerances added);
- choice: a letter A-J found by `choice_letter` on both sides;
- math: `math_expr.math_equivalent` (sympy, never `eval`).
"""

from __future__ import annotations

import re

_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+(?:\.\d+)?)?|[-+]?\.\d+")


def boxed_content(text: str) -> str | None:
    """The content of the last `\\boxed{...}` (or `\\fbox{...}`), braces balanced; None if absent."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth, j = 1, i
    while j < len(text) and depth:
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        j += 1
    return text[i:j - 1] if depth == 0 else None


def extract_answer(text: str) -> str:
    """Last `<answer>` content, else last `\\boxed{}` content, else the text itself (stripped)."""
    tagged = _ANSWER_TAG.findall(text)
    if tagged:
        return tagged[-1].strip()
    boxed = boxed_content(text)
    return (boxed if boxed is not None else text).strip()


def normalize_answer(text: str) -> str:
    """Strip, drop surrounding `$`, casefold, collapse whitespace, drop one trailing period."""
    text = " ".join(str(text).strip().strip("$").casefold().split())
    return text[:-1].rstrip() if text.endswith(".") else text


def _to_float(token: str) -> float:
    token = token.replace(",", "").replace(" ", "")
    if "/" in token:
        num, den = token.split("/")
        return float(num) / float(den)
    return float(token)


def parse_number(text: str) -> float | None:
    """The number the text states: the whole (stripped) text if it is one, else the last number in it.

    >>> parse_number("1,234.5"), parse_number("about 3/4 of it"), parse_number("x = -2 or x = 7")
    (1234.5, 0.75, 7.0)
    """
    s = str(text).strip().strip("$").rstrip(".").rstrip("%").strip()
    try:
        if _NUMBER.fullmatch(s):
            return _to_float(s)
        found = _NUMBER.findall(s)
        return _to_float(found[-1]) if found else None
    except (ValueError, ZeroDivisionError):
        return None


def numbers_close(pred: float, truth: float, rel_tol: float, abs_tol: float) -> bool:
    """`|pred - truth| <= abs_tol + rel_tol * |truth|`."""
    return abs(pred - truth) <= abs_tol + rel_tol * abs(truth)


_CHOICE_PATTERNS = [
    re.compile(r"^\s*\(([A-Ja-j])\)"),                                    # "(B) a cat"
    re.compile(r"^\s*([A-J])\s*(?:[.:)]|$)"),                             # "B", "B.", "B)", "B: a cat"
    re.compile(r"answer\s*(?:is\s*)?[:\s]\s*\(?([A-Ja-j])\)?(?![A-Za-z])", re.IGNORECASE),  # "answer is (C)"
    re.compile(r"\(([A-J])\)"),                                           # "... so (D) ..."
]


def choice_letter(text: str) -> str | None:
    """The option letter A-J a text picks (patterns above, in order), or None.

    >>> choice_letter("(B) a cat"), choice_letter("I think the answer is c."), choice_letter("A dog")
    ('B', 'C', None)
    """
    s = str(text).strip()
    for pat in _CHOICE_PATTERNS:
        m = pat.search(s)
        if m:
            return m.group(1).upper()
    return None
