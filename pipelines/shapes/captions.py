"""Mislabelled captions: the scene a web-style caption really shows, wrong at a controlled rate.

Real text-to-image models fail GenEval by *mode choices*: they can draw the right scene and sometimes do,
because their training captions were often wrong in count, colour binding and relation. The shapes world v2
base is trained the same way: each training image is rendered from `mislabel(caption)` and captioned with
the caption itself, so the model learns p(scene | caption) as a mixture of the right scene and a wrong one.

A wrong scene differs from the caption in the one attribute its category tests:
- counting: the count is off by one ("two red circles" shows one or three; 1 -> 2, 4 -> 3);
- composition: the two colours are bound to the wrong shapes ("a red circle and a blue square" shows a
  blue circle and a red square; with equal colours it shows another colour on the second object);
- position: the relation is flipped ("A left of B" shows A right of B; above <-> below).

A second kind (`kind="extra"`, the shapes world v2's): the image shows one *extra* object the caption
omits (a random colour and shape), as web captions name the salient objects and leave others out. The
base then draws an unrequested object at about that rate for every prompt: one prompt-independent mode
choice ("draw only what was asked") that a reward can teach once for all prompts.
"""

from __future__ import annotations

import random

from mmgrpo.rewards.image.shapes import (
    COLORS,
    MAX_COUNT,
    SHAPES,
    Phrase,
    ShapesPrompt,
    format_prompt,
    parse_prompt,
)

FLIPPED = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


def wrong_scene(prompt: ShapesPrompt, rng: random.Random) -> ShapesPrompt:
    """The scene of `prompt` with its category's attribute wrong (see the module docstring)."""
    if prompt.category == "position":
        return ShapesPrompt(prompt.phrases, FLIPPED[prompt.relation])
    if prompt.category == "composition":
        a, b = prompt.phrases
        if a.color != b.color:
            return ShapesPrompt((Phrase(a.count, b.color, a.shape), Phrase(b.count, a.color, b.shape)))
        other = rng.choice([c for c in COLORS if c != a.color])
        return ShapesPrompt((a, Phrase(b.count, other, b.shape)))
    (p,) = prompt.phrases
    n = {1: 2, MAX_COUNT: MAX_COUNT - 1}.get(p.count) or p.count + rng.choice((-1, 1))
    return ShapesPrompt((Phrase(n, p.color, p.shape),))


KINDS = ("attribute", "extra")
MAX_OBJECTS = 4  # the renderer fits at most four boxes in a 32 px image


def extra_object_scene(prompt: ShapesPrompt, rng: random.Random) -> ShapesPrompt:
    """`prompt`'s scene plus one object of a random colour and shape (a phrase appended; the relation, if
    any, still binds the first two objects). A scene of `MAX_OBJECTS` objects is returned unchanged."""
    if len(prompt.expected()) >= MAX_OBJECTS:
        return prompt
    extra = Phrase(1, rng.choice(sorted(COLORS)), rng.choice(sorted(SHAPES)))
    return ShapesPrompt(prompt.phrases + (extra,), prompt.relation)


def mislabel_scene(caption: str, rate: float, rng: random.Random, kind: str = "attribute") -> ShapesPrompt:
    """The scene an image captioned `caption` shows: the caption itself, or with probability `rate` its
    wrong scene of `kind` ("attribute": `wrong_scene`; "extra": `extra_object_scene`). `rate` in [0, 1];
    one `rng.random()` draw per call, plus those the wrong scene draws."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"mislabel: rate must be in [0, 1]; got {rate}")
    if kind not in KINDS:
        raise ValueError(f"mislabel: kind must be one of {KINDS}; got {kind!r}")
    prompt = parse_prompt(caption)
    if rng.random() >= rate:
        return prompt
    return extra_object_scene(prompt, rng) if kind == "extra" else wrong_scene(prompt, rng)


def mislabel(caption: str, rate: float, rng: random.Random) -> str:
    """The scene (prompt text) an image captioned `caption` shows: the caption itself, or with probability
    `rate` its wrong scene. `rate` in [0, 1]; one `rng.random()` draw per call (plus one for some wrong scenes)."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"mislabel: rate must be in [0, 1]; got {rate}")
    if rng.random() >= rate:
        return caption
    return format_prompt(wrong_scene(parse_prompt(caption), rng))
