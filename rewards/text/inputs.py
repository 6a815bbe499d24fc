"""Text reward inputs: completions as strings, and where ground truth comes from (the convention).

Completions (`outputs`) are a list of strings, or of chat transcripts (lists of `{"role", "content"}`
mappings, as TRL passes them: the last message's content is scored), or of mappings with `text`.

Ground truth for sample i under a key such as `answer` is looked up in this order:
1. a metadata keyword argument of that name holding one value per sample (`answer=[...]`, the way TRL passes
   dataset columns), so `reward(completions, conds, answer=["4", "B"])`;
2. `conds[i][key]` when the condition is a mapping (`{"prompt": ..., "answer": "4"}`).
A sample with no value (or `None`) is "not applicable" and scores NaN.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence


def completion_texts(outputs: Any, where: str = "outputs") -> list[str]:
    """`outputs` -> one string per sample (see the module docstring for the accepted forms)."""
    if isinstance(outputs, str) or not isinstance(outputs, Sequence):
        raise TypeError(f"{where}: expected a list of completion strings, got {type(outputs).__name__}")
    return [_one_text(x, f"{where}[{i}]") for i, x in enumerate(outputs)]


def _one_text(x: Any, where: str) -> str:
    if isinstance(x, str):
        return x
    if isinstance(x, Mapping):
        for key in ("content", "text"):
            if isinstance(x.get(key), str):
                return x[key]
        raise TypeError(f"{where}: a mapping completion needs a string 'content' or 'text', got keys {sorted(x)}")
    if isinstance(x, Sequence) and x and isinstance(x[-1], Mapping):
        return _one_text(x[-1], f"{where}[-1]")
    raise TypeError(f"{where}: expected a string or a chat transcript, got {type(x).__name__}")


def per_sample(conds: Sequence[Any], metadata: Mapping[str, Any], key: str, n: int,
               where: str = "reward") -> list[Any]:
    """Ground truth `key` for each of `n` samples: metadata column first, else `conds[i][key]`, else None."""
    if key in metadata and metadata[key] is not None:
        column = metadata[key]
        if isinstance(column, (str, bytes)) or not hasattr(column, "__len__"):
            raise ValueError(f"{where}: metadata {key!r} must hold one value per sample (a list of {n}), "
                             f"got {type(column).__name__}")
        if len(column) != n:
            raise ValueError(f"{where}: metadata {key!r} has {len(column)} values for {n} samples")
        return list(column)
    if len(conds) != n:
        raise ValueError(f"{where}: {len(conds)} conds for {n} outputs")
    return [c.get(key) if isinstance(c, Mapping) else None for c in conds]


def cond_text(cond: Any, keys: Sequence[str] = ("prompt", "text")) -> str | None:
    """The text of a condition: the string itself, or the first string under `keys` of a mapping."""
    if isinstance(cond, str):
        return cond
    if isinstance(cond, Mapping):
        for k in keys:
            if isinstance(cond.get(k), str):
                return cond[k]
    return None
