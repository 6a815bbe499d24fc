"""Answer extraction, numbers, option letters and the safe math parser."""

import doctest

import pytest

import mmgrpo.rewards.text.answers as answers_mod
import mmgrpo.rewards.text.format as format_mod
import mmgrpo.rewards.text.grounding as grounding_mod
import mmgrpo.rewards.text.metrics as metrics_mod
from mmgrpo.rewards.text.answers import boxed_content, choice_letter, extract_answer, parse_number
from mmgrpo.rewards.text.math_expr import MathParseError, math_equivalent, parse_math

sympy = pytest.importorskip("sympy", reason="sympy is needed for symbolic equivalence")


@pytest.mark.parametrize("module", [answers_mod, format_mod, grounding_mod, metrics_mod])
def test_doctests(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


def test_extract_answer_prefers_last_tag_then_boxed():
    assert extract_answer("<think>x</think><answer> 4 </answer>") == "4"
    assert extract_answer("<answer>1</answer> no wait <answer>2</answer>") == "2"
    assert extract_answer("so \\boxed{\\frac{1}{2}} done") == "\\frac{1}{2}"   # nested braces kept
    assert extract_answer("  plain  ") == "plain"
    assert boxed_content("\\boxed{unclosed") is None


def test_parse_number_forms():
    assert parse_number("-3.5") == -3.5
    assert parse_number("1,000,000") == 1e6
    assert parse_number("50%") == 50.0
    assert parse_number("no digits") is None
    assert parse_number("1/0") is None


def test_choice_letter_patterns():
    assert choice_letter("B") == "B" and choice_letter("B. Paris") == "B" and choice_letter("(d)") == "D"
    assert choice_letter("The answer: C") == "C"
    assert choice_letter("so option (E) fits") == "E"
    assert choice_letter("A dog is running") is None          # the article "A" is not an option
    assert choice_letter("the answer is correct") is None      # "c" of "correct" is not an option


def test_math_parser_builds_the_right_expressions():
    x = sympy.Symbol("x")
    assert parse_math("\\frac{1}{2}") == sympy.Rational(1, 2)
    assert parse_math("2x^2 + 3x") == 2 * x**2 + 3 * x               # implicit multiplication, ^ as power
    assert parse_math("\\sqrt[3]{8}") == 2
    assert parse_math("\\left(1+2\\right) \\cdot 3") == 9
    assert parse_math("y = 2^{10}") == 1024                          # right-hand side of an equation
    assert parse_math("3!") == 6
    assert parse_math("0.25") == sympy.Rational(1, 4)                # decimals are exact rationals


def test_math_equivalence():
    assert math_equivalent("\\frac{2}{4}", "0.5") is True
    assert math_equivalent("(x+1)^2", "x^2 + 2x + 1") is True
    assert math_equivalent("\\sqrt{2}/2", "1/\\sqrt{2}") is True
    assert math_equivalent("2x", "x + 1") is False
    assert math_equivalent("hello world!", "1") is None              # unparsable -> caller falls back


@pytest.mark.parametrize("text", [
    "__import__('os').system('echo hi')",     # quotes and dunder names are not in the grammar
    "lambda: 1",
    "9^9^9^9",                                 # exponent tower refused before sympy evaluates it
    "1" * 120,                                 # number longer than 100 digits
    "x" * 300,                                 # longer than 256 characters
    "(1+2",
    "Paris",                                   # a word is not a product of variables P*a*r*i*s
])
def test_math_parser_refuses_code_and_huge_inputs(text):
    with pytest.raises(MathParseError):
        parse_math(text)
