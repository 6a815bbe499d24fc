"""A small, safe parser of math answers (plain or LaTeX) into sympy expressions, and symbolic equivalence.

Model output is never passed to `eval` or `sympy.sympify`/`parse_expr` (both evaluate Python code): a
recursive-descent parser accepts only numbers, one-letter variables, `+ - * / ^ **`, parentheses and
braces, implicit multiplication (`2x`, `2(x+1)`, `xy`; a run of three or more letters that is not a
function name is a word and refused), the functions sin cos tan log ln exp sqrt, and the LaTeX forms
`\\frac{a}{b}` (`\\dfrac`, `\\tfrac`), `\\sqrt{a}`, `\\sqrt[n]{a}`, `\\pi`, `\\cdot`, `\\times`, `\\infty`;
`e` is Euler's number, other letters are variables. `\\left`/`\\right`, `$`, thin spaces, `\\%`, `^\\circ`
and `\\text{...}` wrappers are dropped. For an equation `x = 5` the right-hand side of the last `=` is
compared. Inputs longer than 256 characters, numbers longer than 100 digits and numeric powers with an
exponent above 1000 are refused (a guard against inputs that would make sympy work for minutes).
"""

from __future__ import annotations

import re
from typing import Any

MAX_CHARS = 256
MAX_DIGITS = 100
MAX_EXPONENT = 1000
FUNCTIONS = ("sqrt", "sin", "cos", "tan", "log", "ln", "exp")


class MathParseError(ValueError):
    """The text is not a math expression this parser accepts."""


_TOKEN = re.compile(r"\s*(?:(\d+\.?\d*|\.\d+)|(\\[A-Za-z]+)|([A-Za-z]+)|(\*\*|[-+*/^(){}\[\]!]))")
_STRIP = [r"\\left", r"\\right", r"\\[,;:! ]", r"\$", r"\\%", r"%", r"\^\s*\{?\\circ\}?", r"\\displaystyle"]


def _preprocess(text: str) -> str:
    text = text.strip()
    if len(text) > MAX_CHARS:
        raise MathParseError(f"longer than {MAX_CHARS} characters")
    for pat in _STRIP:
        text = re.sub(pat, " ", text)
    # \text{cm}, \mathrm{x}, \mathbf{x} -> their content
    text = re.sub(r"\\(?:text|mathrm|mathbf|mathit|operatorname)\s*\{([^{}]*)\}", r" \1 ", text)
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)  # 1,000 -> 1000
    if "=" in text:
        text = text.rsplit("=", 1)[1]
    for old, new in (("\\cdot", "*"), ("\\times", "*"), ("\\dfrac", "\\frac"), ("\\tfrac", "\\frac")):
        text = text.replace(old, new)
    return text


def _tokenize(text: str) -> list[str]:
    tokens, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise MathParseError(f"unexpected character {text[pos:].strip()[:1]!r}")
        num, cmd, word, op = m.groups()
        if num is not None:
            if len(num.replace(".", "")) > MAX_DIGITS:
                raise MathParseError(f"number longer than {MAX_DIGITS} digits")
            tokens.append(num)
        elif cmd is not None:
            tokens.append(cmd)
        elif word is not None:
            # known function names stay whole; any other run of letters is a product of one-letter variables,
            # up to two of them in a row ("xy"): a longer run is a word ("Paris"), not math
            if any(len(run) > 2 for run in re.split("|".join(FUNCTIONS), word)):
                raise MathParseError(f"{word!r} is a word, not a product of variables")
            while word:
                fn = next((f for f in FUNCTIONS if word.startswith(f)), None)
                tokens.append(fn or word[0])
                word = word[len(fn):] if fn else word[1:]
        else:
            tokens.append(op)
        pos = m.end()
    return tokens


class _Parser:
    def __init__(self, tokens: list[str], sp: Any):
        self.toks, self.i, self.sp = tokens, 0, sp

    def peek(self) -> str | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, expected: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (expected is not None and tok != expected):
            raise MathParseError(f"expected {expected or 'more input'}, got {tok!r}")
        self.i += 1
        return tok

    def parse(self) -> Any:
        if not self.toks:
            raise MathParseError("empty expression")
        out = self.expr()
        if self.peek() is not None:
            raise MathParseError(f"unexpected {self.peek()!r}")
        return out

    def expr(self) -> Any:
        out = self.term()
        while self.peek() in ("+", "-"):
            out = out + self.term() if self.take() == "+" else out - self.term()
        return out

    def _starts_atom(self, tok: str | None) -> bool:
        return tok is not None and (tok[0].isdigit() or tok[0] == "." or tok[0].isalpha() or tok[0] == "\\"
                                    or tok in ("(", "{"))

    def term(self) -> Any:
        out = self.unary()
        while True:
            tok = self.peek()
            if tok in ("*", "/"):
                self.take()
                rhs = self.unary()
                out = out * rhs if tok == "*" else out / rhs
            elif self._starts_atom(tok):  # implicit multiplication: 2x, 2(x+1), x y
                out = out * self.power()
            else:
                return out

    def unary(self) -> Any:
        if self.peek() in ("+", "-"):
            sign = self.take()
            val = self.unary()
            return -val if sign == "-" else val
        return self.power()

    def power(self) -> Any:
        base = self.atom()
        if self.peek() == "!":
            self.take()
            base = self.sp.factorial(self._guard_int(base, "factorial argument"))
        if self.peek() in ("^", "**"):
            self.take()
            exponent = self.unary()
            if exponent.is_number and base.is_number and abs(float(exponent)) > MAX_EXPONENT:
                raise MathParseError(f"exponent above {MAX_EXPONENT}")
            return self.sp.Pow(base, exponent)
        return base

    def _guard_int(self, val: Any, what: str) -> Any:
        if not (val.is_Integer and 0 <= int(val) <= MAX_EXPONENT):
            raise MathParseError(f"{what} must be an integer in [0, {MAX_EXPONENT}]")
        return val

    def group(self) -> Any:
        open_ = self.take()
        close = {"(": ")", "{": "}", "[": "]"}.get(open_)
        if close is None:
            raise MathParseError(f"expected '(' or '{{', got {open_!r}")
        out = self.expr()
        self.take(close)
        return out

    def atom(self) -> Any:
        sp, tok = self.sp, self.peek()
        if tok is None:
            raise MathParseError("expression ends early")
        if tok in ("(", "{"):
            return self.group()
        self.take()
        if tok[0].isdigit() or tok[0] == ".":
            return sp.Rational(tok)  # exact: 0.5 == 1/2
        if tok in FUNCTIONS or tok in ("\\sqrt", "\\sin", "\\cos", "\\tan", "\\log", "\\ln", "\\exp"):
            name = tok.lstrip("\\")
            if name == "sqrt" and self.peek() == "[":
                index = self.group()
                return sp.root(self.group(), index)
            arg = self.group() if self.peek() in ("(", "{") else self.power()
            return {"sqrt": sp.sqrt, "sin": sp.sin, "cos": sp.cos, "tan": sp.tan, "log": sp.log,
                    "ln": sp.log, "exp": sp.exp}[name](arg)
        if tok == "\\frac":
            num = self.group()
            return num / self.group()
        if tok == "\\pi":
            return sp.pi
        if tok == "\\infty":
            return sp.oo
        if len(tok) == 1 and tok.isalpha():
            return sp.E if tok == "e" else sp.Symbol(tok)
        raise MathParseError(f"unsupported token {tok!r}")


def sympy_available() -> bool:
    try:
        import sympy  # noqa: F401
    except ImportError:
        return False
    return True


def parse_math(text: str) -> Any:
    """Parse `text` into a sympy expression, or raise MathParseError. Needs sympy."""
    import sympy

    return _Parser(_tokenize(_preprocess(text)), sympy).parse()


def math_equivalent(prediction: str, reference: str, tol: float = 1e-6) -> bool | None:
    """True/False when both sides parse: `simplify(p - r) == 0`, or for numbers |p - r| <= tol * max(1, |r|).

    None when either side does not parse (the caller falls back to a string comparison).
    """
    import sympy

    try:
        p, r = parse_math(prediction), parse_math(reference)
    except (MathParseError, ValueError, TypeError, ZeroDivisionError):
        return None
    try:
        if p.is_number and r.is_number:
            pv, rv = complex(sympy.N(p)), complex(sympy.N(r))
            return abs(pv - rv) <= tol * max(1.0, abs(rv))
        return bool(sympy.simplify(p - r) == 0)
    except (TypeError, ValueError, OverflowError, ZeroDivisionError):
        return None
