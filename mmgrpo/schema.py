"""The config schema machinery: dataclass fields with declared ranges, checked conversion from plain data.

A field's valid range is declared once, where the field is declared (`lr: float = bounded(1e-4, gt=0)`),
next to its one-line doc comment; `from_dict` checks every value against it (numbers must also be finite)
and `mmgrpo train --help-config` prints both. Imports nothing of mmgrpo, so that config and components
can both build on it without an import circle.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import math
import textwrap
import types
import typing
from dataclasses import dataclass, fields, is_dataclass
from typing import Any, Literal, Union, get_args, get_origin


class ConfigError(ValueError):
    """A config value is wrong; the message names the dotted key and what would be right."""


# ----------------------------------------------------------------------------- ranges

@dataclass(frozen=True)
class Range:
    """Bounds of a numeric field (each optional); a list-valued field applies them to every item."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def contains(self, v: float) -> bool:
        return ((self.ge is None or v >= self.ge) and (self.gt is None or v > self.gt)
                and (self.le is None or v <= self.le) and (self.lt is None or v < self.lt))

    def describe(self) -> str:
        """`>= 1`, `> 0`, `in (0, 1)`, `in [0, 1]`, ..."""
        low = (f"[{_num(self.ge)}" if self.ge is not None else f"({_num(self.gt)}" if self.gt is not None else None)
        high = (f"{_num(self.le)}]" if self.le is not None else f"{_num(self.lt)})" if self.lt is not None else None)
        if low and high:
            return f"in {low}, {high}"
        if low:
            return (">= " if low[0] == "[" else "> ") + low[1:]
        if high:
            return ("<= " if high[-1] == "]" else "< ") + high[:-1]
        return "any finite number"


def _num(v: float) -> str:
    if isinstance(v, int) and v >= 2 ** 31 and (v & (v - 1)) == 0:
        return f"2^{v.bit_length() - 1}"
    return repr(v) if isinstance(v, float) else str(v)


def bounded(default: Any = dataclasses.MISSING, *, ge: float | None = None, gt: float | None = None,
            le: float | None = None, lt: float | None = None, default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field whose value (or every item of a list value; `None` where the type allows it) must
    be a finite number within the given bounds: `num_steps: int = bounded(10, ge=2)  # doc`."""
    rng = Range(ge, gt, le, lt)
    if default is not dataclasses.MISSING and isinstance(default, (int, float)) and not isinstance(default, bool):
        if not (math.isfinite(default) and rng.contains(default)):
            raise ValueError(f"bounded field default {default!r} lies outside its own range {rng.describe()}")
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata={"range": rng})
    return dataclasses.field(default=default, metadata={"range": rng})


def field_range(f: dataclasses.Field) -> Range | None:
    return f.metadata.get("range") if f.metadata else None


# ----------------------------------------------------------------------------- docs

@functools.lru_cache(maxsize=None)
def _docs(cls: type) -> tuple[tuple[str, str], ...]:
    try:
        src = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return ()
    lines = src.splitlines()
    try:
        node = ast.parse(src).body[0]
    except (SyntaxError, IndexError):
        return ()
    out = []
    for stmt in getattr(node, "body", []):
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        tail = lines[stmt.end_lineno - 1][stmt.end_col_offset:]
        doc = tail.split("#", 1)[1].strip() if "#" in tail else ""
        if not doc:                                  # the comment lines right above the field
            above, i = [], stmt.lineno - 2
            while i >= 0 and lines[i].strip().startswith("#"):
                above.insert(0, lines[i].strip().lstrip("#").strip())
                i -= 1
            doc = " ".join(above)
        out.append((stmt.target.id, doc))
    return tuple(out)


def field_docs(cls: type) -> dict[str, str]:
    """Each field's doc: the `# comment` after it on its line, or the comment lines right above it (shown by
    `mmgrpo train --help-config`)."""
    docs = {}
    for klass in reversed(getattr(cls, "__mro__", (cls,))):
        if is_dataclass(klass):
            docs.update({k: v for k, v in _docs(klass) if v})
    return docs


# ----------------------------------------------------------------------------- schema → instance

def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _out_of_range(where: str, value: Any, rng: Range | None, kind: str = "a finite number") -> ConfigError:
    valid = kind + (f" {rng.describe()}" if rng and rng.describe() != "any finite number" else "")
    return ConfigError(f"{where}: {value!r} is out of range; valid: {valid}")


def _coerce(tp: Any, value: Any, where: str, rng: Range | None = None) -> Any:
    """Check `value` against the annotation `tp` (recursively) and the range `rng`, returning the converted value."""
    if tp is Any or tp is object:
        return value
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{where}: must not be null (expected {_type_name(tp)})")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where, rng)
            except ConfigError as exc:
                errors.append(str(exc))
        ranged = [e for e in errors if "out of range" in e]
        if ranged:                                   # the right type, the wrong value: say so
            raise ConfigError(ranged[0] + (" or null" if type(None) in args else ""))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of {_type_name(tp)}")
    if origin is Literal:
        choices = get_args(tp)
        if isinstance(value, bool) and all(isinstance(c, str) for c in choices):
            # YAML 1.1 reads `no` / `off` as false: map it back to the string choice that was meant
            spelled = [c for c in (("no", "off", "false") if not value else ("yes", "on", "true")) if c in choices]
            value = spelled[0] if spelled else value
        if value not in choices:
            raise ConfigError(f"{where}: {value!r} is not valid; choose one of {list(choices)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        args = get_args(tp)
        item_tp = args[0] if args else Any
        out = [_coerce(item_tp, v, f"{where}[{i}]", rng) for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        return dict(value)
    if is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {type(value).__name__} {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if rng is not None and not rng.contains(value):
                raise _out_of_range(where, value, rng, "an integer")
            return value
        raise ConfigError(f"{where}: expected an integer, got {type(value).__name__} {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:
                number = math.inf
            if not math.isfinite(number) or (rng is not None and not rng.contains(number)):
                raise _out_of_range(where, value, rng)
            return number
        raise ConfigError(f"{where}: expected a number, got {type(value).__name__} {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {type(value).__name__} {value!r}")
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def _with_doc(exc: ConfigError, key: str, doc: str) -> ConfigError:
    """Append the field's doc to a range error about this very field (not to one from a nested field)."""
    text = str(exc)
    own = text.startswith(f"{key}:") or text.startswith(f"{key}[")
    return ConfigError(f"{text} ({doc})") if doc and own and "out of range" in text else exc


def from_dict(cls: type, data: dict, where: str = "") -> Any:
    """Build dataclass `cls` from `data`, checking keys, types and declared ranges; `where` prefixes error keys."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls) if f.init}
    unknown = sorted(set(data) - set(known), key=str)
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ConfigError(f"unknown config key {key!r}; valid keys here: {', '.join(sorted(known))}")
    kwargs = {}
    for name, value in data.items():
        key = f"{where}.{name}" if where else name
        try:
            kwargs[name] = _coerce(hints[name], value, key, field_range(known[name]))
        except ConfigError as exc:
            raise _with_doc(exc, key, field_docs(cls).get(name, "")) from None
    missing = [n for n, f in known.items() if n not in kwargs and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        key = f"{where}.{missing[0]}" if where else missing[0]
        raise ConfigError(f"missing required config key {key!r}")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{where or cls.__name__}: {exc}") from exc


def check_fields(obj: Any, where: str = "") -> None:
    """Check an already built dataclass's values against their declared types' ranges (for `__post_init__`)."""
    hints = typing.get_type_hints(type(obj))
    for f in fields(obj):
        rng = field_range(f)
        if rng is not None:
            key = f"{where}.{f.name}" if where else f.name
            try:
                _coerce(hints[f.name], getattr(obj, f.name), key, rng)
            except ConfigError as exc:
                raise _with_doc(exc, key, field_docs(type(obj)).get(f.name, "")) from None


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain dict/list structure (for saving the resolved config)."""
    if is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


# ----------------------------------------------------------------------------- the reference

@dataclass(frozen=True)
class FieldInfo:
    """One row of the configuration reference."""

    key: str            # dotted key, as written in overrides
    type: str
    default: str
    valid: str          # the declared range, choices, or ""
    doc: str


def _default_text(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return repr(f.default) if not isinstance(f.default, str) else f.default
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
        return "" if is_dataclass(value) else repr(to_dict(value))
    return "(required)"


def _valid_text(tp: Any, f: dataclasses.Field) -> str:
    rng = field_range(f)
    args = get_args(tp)
    nullable = get_origin(tp) in (Union, types.UnionType) and type(None) in args
    inner = [a for a in args if a is not type(None)] if nullable else [tp]
    if rng is not None:
        return rng.describe() + (" or null" if nullable else "")
    lits = [a for a in inner if get_origin(a) is Literal]
    if lits:
        return " | ".join(str(c) for c in get_args(lits[0])) + (" | null" if nullable else "")
    if any(a is float for a in inner):
        return "finite" + (" or null" if nullable else "")
    return ""


def describe_fields(cls: type, prefix: str = "") -> list[FieldInfo]:
    """Every field of `cls` (nested dataclasses flattened into dotted keys) with type, default, range, doc."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    rows = []
    for f in fields(cls):
        if not f.init:
            continue
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        if is_dataclass(tp):
            rows.append(FieldInfo(key, tp.__name__, "", "", docs.get(f.name, "")))
            rows += describe_fields(tp, key + ".")
            continue
        shown = "str" if get_origin(tp) is Literal else _type_name(tp)
        rows.append(FieldInfo(key, shown, _default_text(f), _valid_text(tp, f), docs.get(f.name, "")))
    return rows
