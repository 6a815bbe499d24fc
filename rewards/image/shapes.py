"""The shapes prompt language and its analytic verifier reward (color segmentation, components, shapes).

A GenEval-style verifiable reward (Ghosh et al., 2023, "GenEval: An Object-Focused Framework for
Evaluating Text-to-Image Alignment") for the flat-shape toy world, checked without any learned model:

1. every pixel is given a palette color by its hue (saturation and value thresholds mark the white
   background); hue is unchanged by blending a color with white, so anti-aliased edges keep their color;
2. the pixels of each color are split into 8-connected components (vectorized label propagation);
3. each component large enough to be an object is classified circle / square / triangle from three
   scale-free features of its mask: fill = area / bounding-box area, top = share of its area in the
   upper half of its bounding box, corners = share of on-pixels in the box's corner blocks
   (square ~ (1, 0.5, 1), circle ~ (0.79, 0.5, 0.1), apex-up triangle ~ (0.5, 0.25, 0.45));
4. the detected objects are matched to the prompt's objects and the prompt's relation is checked.

The prompt language (the single definition; `mmgrpo.pipelines.shapes.grammar` generates from it):

    prompt   := phrase ( "and" phrase )*  |  phrase RELATION phrase      (relation phrases have count 1)
    phrase   := COUNT COLOR SHAPE            COUNT in a, an, one, two, three, four; SHAPE plural if > 1
    RELATION := "left of" | "right of" | "to the left of" | "to the right of" | "above" | "below"

Scores (per image). Each expected object is one item; a relation is one more item. An expected object
matched to a detected one earns sim = 0.5 [same color] + 0.5 [same shape]; the relation item earns 1
when the two objects matched to its phrases stand in the stated relation (centers: "A left of B" iff
x_B - x_A > |y_B - y_A|). With n_E expected and n_D detected objects, over the best matching:

    partial = (sum of sims + [relation holds]) / (max(n_E, n_D) + [prompt has a relation])   in [0, 1]
    strict  = 1 if partial == 1 else 0   (exactly the described objects, nothing extra, relation right)

Dividing by max(n_E, n_D) charges both missing and extra objects.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

# --------------------------------------------------------------------------------------------------
# The language
# --------------------------------------------------------------------------------------------------

# Palette (RGB 0-255) used by the renderer; the verifier uses only their hues.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "yellow": (230, 210, 20),
    "green": (30, 170, 50),
    "blue": (30, 70, 220),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
PLURALS: dict[str, str] = {s: s + "s" for s in SHAPES}
COUNT_WORDS: dict[str, int] = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4}
CANONICAL_COUNT: dict[int, str] = {1: "a", 2: "two", 3: "three", 4: "four"}
MAX_COUNT = 4
# Each relation as written -> its canonical name.
RELATION_PHRASES: dict[str, str] = {
    "left of": "left of",
    "to the left of": "left of",
    "right of": "right of",
    "to the right of": "right of",
    "above": "above",
    "below": "below",
}
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
CATEGORIES: tuple[str, ...] = ("counting", "composition", "position")


def vocabulary_words() -> list[str]:
    """Every word a prompt of this language can contain (for the toy model's tokenizer), sorted."""
    words = set(COUNT_WORDS) | set(COLORS) | set(SHAPES) | set(PLURALS.values()) | {"and"}
    for phrase in RELATION_PHRASES:
        words |= set(phrase.split())
    return sorted(words)


@dataclass(frozen=True)
class Phrase:
    """`count` objects of one `color` and `shape`: "two red circles"."""

    count: int
    color: str
    shape: str


@dataclass(frozen=True)
class ShapesPrompt:
    """A parsed prompt: its phrases and, for "A left of B" prompts, the canonical relation."""

    phrases: tuple[Phrase, ...]
    relation: str | None = None

    @property
    def category(self) -> str:
        """counting (one phrase), composition (phrases joined by "and") or position (a relation)."""
        if self.relation is not None:
            return "position"
        return "counting" if len(self.phrases) == 1 else "composition"

    def expected(self) -> list[tuple[str, str]]:
        """The expected objects as (color, shape), one entry per object, in phrase order."""
        return [(p.color, p.shape) for p in self.phrases for _ in range(p.count)]


class PromptError(ValueError):
    """A prompt outside the shapes language; the message says where and what was expected."""


def _phrase_text(p: Phrase) -> str:
    return f"{CANONICAL_COUNT[p.count]} {p.color} {p.shape if p.count == 1 else PLURALS[p.shape]}"


def format_prompt(prompt: ShapesPrompt) -> str:
    """The canonical text of a prompt: "two red circles", "a blue square left of a yellow triangle"."""
    if prompt.relation is not None:
        a, b = prompt.phrases
        return f"{_phrase_text(a)} {prompt.relation} {_phrase_text(b)}"
    return " and ".join(_phrase_text(p) for p in prompt.phrases)


def parse_prompt(text: str) -> ShapesPrompt:
    """Parse a prompt of the shapes language (case and a trailing period are ignored).

    >>> parse_prompt("a blue square left of a yellow triangle").relation
    'left of'
    """
    if not isinstance(text, str):
        raise PromptError(f"shapes prompt must be a string, got {type(text).__name__}")
    words = text.lower().strip().rstrip(".").split()
    pos = 0

    def fail(what: str) -> PromptError:
        got = repr(words[pos]) if pos < len(words) else "the end of the prompt"
        return PromptError(f"shapes prompt {text!r}: at word {pos + 1} expected {what}, got {got}")

    def phrase() -> Phrase:
        nonlocal pos
        if pos >= len(words) or words[pos] not in COUNT_WORDS:
            raise fail(f"a count ({', '.join(COUNT_WORDS)})")
        count = COUNT_WORDS[words[pos]]
        pos += 1
        if pos >= len(words) or words[pos] not in COLORS:
            raise fail(f"a color ({', '.join(COLORS)})")
        color = words[pos]
        pos += 1
        forms = SHAPES if count == 1 else tuple(PLURALS.values())
        if pos >= len(words) or words[pos] not in forms:
            number = "singular" if count == 1 else "plural"
            raise fail(f"a {number} shape ({', '.join(forms)})")
        shape = SHAPES[forms.index(words[pos])]
        pos += 1
        return Phrase(count, color, shape)

    phrases = [phrase()]
    relation = None
    rest = " ".join(words[pos:])
    for written in sorted(RELATION_PHRASES, key=len, reverse=True):
        if rest == written or rest.startswith(written + " "):
            relation = RELATION_PHRASES[written]
            pos += len(written.split())
            phrases.append(phrase())
            if any(p.count != 1 for p in phrases):
                raise PromptError(
                    f"shapes prompt {text!r}: a relation ({relation!r}) joins single objects; "
                    "write 'a <color> <shape> <relation> a <color> <shape>'"
                )
            break
    else:
        while pos < len(words) and words[pos] == "and":
            pos += 1
            phrases.append(phrase())
    if pos != len(words):
        raise fail("the end of the prompt, 'and' or a relation (" + ", ".join(RELATION_PHRASES) + ")")
    return ShapesPrompt(tuple(phrases), relation)


# --------------------------------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------------------------------

# A pixel belongs to a color when saturation >= SAT_MIN, value >= VAL_MIN, its hue lies within
# HUE_TOLERANCE degrees of that color's hue and it is at least ALPHA_MIN of the way from white to
# that color (see `color_labels`); white/gray/black and in-between hues stay unassigned.
SAT_MIN = 0.15
VAL_MIN = 0.25
HUE_TOLERANCE = 20.0
ALPHA_MIN = 0.5
# A component is an object when its area is at least this share of the image (10 px at 32x32);
# smaller specks are noise.
MIN_AREA_FRAC = 10 / 1024
# Shape prototypes in (fill, top, corners) feature space (see `shape_features`) and the largest
# distance still accepted. Continuous shapes give square (1, 1/2, 1), circle (pi/4, 1/2, 0.03) and
# apex-up triangle (1/2, 1/4, 0.45); the values below are centred on what the renderer's 32 px images
# measure, sharp and after a 3x3 blur (circles: fill 0.67-0.88, corners <= 0.33; blurred squares:
# fill >= 0.95, corners >= 0.69; triangles: fill 0.50-0.72, top 0.24-0.35).
SHAPE_PROTOTYPES: dict[str, tuple[float, float, float]] = {
    "square": (1.0, 0.5, 1.0),
    "circle": (0.8, 0.5, 0.1),
    "triangle": (0.58, 0.29, 0.44),
}
SHAPE_MAX_DIST = 0.35
MAX_ASPECT = 2.0  # bounding boxes longer than 2:1 are no shape of the language


def hue_saturation_value(images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """HSV of `images` [N,3,H,W] in [0,1]: hue in degrees [0,360), saturation, value, each [N,H,W]."""
    r, g, b = images.float().unbind(1)  # [N,H,W] each
    value, argmax = images.float().max(1)  # [N,H,W]
    chroma = value - images.float().min(1).values  # [N,H,W]
    safe = chroma.clamp_min(1e-8)
    hue = torch.where(argmax == 0, ((g - b) / safe) % 6.0,
                      torch.where(argmax == 1, (b - r) / safe + 2.0, (r - g) / safe + 4.0)) * 60.0
    hue = torch.where(chroma > 0, hue, torch.zeros_like(hue)) % 360.0
    saturation = torch.where(value > 0, chroma / value.clamp_min(1e-8), torch.zeros_like(value))
    return hue, saturation, value


def palette_hues() -> Tensor:
    """The hue (degrees) of each palette color, in `COLORS` order: [K]."""
    rgb = torch.tensor(list(COLORS.values()), dtype=torch.float32) / 255.0  # [K,3]
    hue, _, _ = hue_saturation_value(rgb[:, :, None, None].permute(1, 0, 2, 3).reshape(1, 3, 1, -1))
    return hue.reshape(-1)


def color_labels(images: Tensor) -> Tensor:
    """Palette index of each pixel, -1 for background or ambiguous pixels: [N,3,H,W] -> [N,H,W] int64.

    A pixel takes the palette color nearest in hue (within HUE_TOLERANCE) if it is saturated enough
    for its hue to mean something (SAT_MIN, VAL_MIN) and covers at least half a pixel: its coverage
    alpha = <1 - p, 1 - c> / |1 - c|^2 is where it lies on the line from white (0) to the color c (1),
    so an anti-aliased edge pixel belongs to the shape when the shape covers half of it or more.
    """
    hue, sat, val = hue_saturation_value(images)  # [N,H,W]
    centers = palette_hues()  # [K]
    diff = (hue[..., None] - centers).abs()  # [N,H,W,K]
    dist = torch.minimum(diff, 360.0 - diff)  # circular hue distance
    best, idx = dist.min(-1)  # [N,H,W]
    ink = 1.0 - torch.tensor(list(COLORS.values()), dtype=torch.float32) / 255.0  # [K,3] color minus white
    away = 1.0 - images.float().permute(0, 2, 3, 1)  # [N,H,W,3]
    alpha = (away * ink[idx]).sum(-1) / (ink[idx] ** 2).sum(-1)  # [N,H,W]
    ok = (sat >= SAT_MIN) & (val >= VAL_MIN) & (best <= HUE_TOLERANCE) & (alpha >= ALPHA_MIN)
    return torch.where(ok, idx, torch.full_like(idx, -1))


def label_components(masks: Tensor) -> Tensor:
    """8-connected component labels of boolean `masks` [B,H,W] -> int64 [B,H,W] (0 = off, >0 = component).

    Vectorized label propagation: every on-pixel starts with its own id (flat index + 1) and takes
    the largest id in its 3x3 neighbourhood until nothing changes, so a component ends up labelled
    by the largest id it contains (at most its pixel count of rounds).
    """
    b, h, w = masks.shape
    ids = torch.arange(1, h * w + 1, dtype=torch.float64).reshape(1, h, w).expand(b, h, w)
    labels = torch.where(masks, ids, torch.zeros_like(ids))  # [B,H,W]; float64 is exact for ids < 2^53
    while True:
        grown = F.max_pool2d(labels[:, None], kernel_size=3, stride=1, padding=1)[:, 0]  # [B,H,W]
        grown = torch.where(masks, grown, torch.zeros_like(grown))
        if torch.equal(grown, labels):
            return labels.long()
        labels = grown


def shape_features(mask: Tensor) -> tuple[float, float, float, float]:
    """(fill, top, corners, aspect) of one component `mask` [h,w] bool cropped to its bounding box.

    fill = area / (h * w); top = share of the area above the box's mid-height (a middle row of an
    odd-height box counts half); corners = share of on-pixels in the box's four k x k corner blocks,
    k = round(min(h, w) / 5) (a square fills them, even with blurred corners; a circle barely touches
    them, however blocky; an apex-up triangle fills most of the two lower ones, none of the upper);
    aspect = max(h, w) / min(h, w).
    """
    h, w = mask.shape
    m = mask.float()
    rows = m.sum(1)  # [h] pixels per row
    area = float(rows.sum())
    half = h // 2
    top = float(rows[:half].sum()) + (0.5 * float(rows[half]) if h % 2 else 0.0)
    k = max(1, round(min(h, w) / 5))
    corners = float(torch.stack([m[:k, :k], m[:k, -k:], m[-k:, :k], m[-k:, -k:]]).mean())
    return area / (h * w), top / area, corners, max(h, w) / min(h, w)


def classify_shape(mask: Tensor) -> str | None:
    """circle / square / triangle for a component `mask` [h,w] (cropped), or None if it is none of them.

    The nearest prototype in (fill, top, corners) space, if within SHAPE_MAX_DIST and the box is no
    longer than MAX_ASPECT : 1.
    """
    fill, top, corners, aspect = shape_features(mask)
    if aspect > MAX_ASPECT:
        return None
    name, dist = min(
        ((s, ((fill - f) ** 2 + (top - t) ** 2 + (corners - c) ** 2) ** 0.5)
         for s, (f, t, c) in SHAPE_PROTOTYPES.items()),
        key=lambda x: x[1],
    )
    return name if dist <= SHAPE_MAX_DIST else None


@dataclass(frozen=True)
class Detection:
    """One object found in an image: palette color, shape (None = unrecognised), center (px), area (px)."""

    color: str
    shape: str | None
    cx: float
    cy: float
    area: int


def detect_objects(images: Tensor) -> list[list[Detection]]:
    """The objects in each image of `images` [N,3,H,W] in [0,1], largest first."""
    n, _, h, w = images.shape
    colors = list(COLORS)
    labels = color_labels(images)  # [N,H,W]
    k = len(colors)
    masks = labels[:, None] == torch.arange(k).reshape(1, k, 1, 1)  # [N,K,H,W]
    comps = label_components(masks.reshape(n * k, h, w)).reshape(n, k, h, w)
    min_area = max(1, round(MIN_AREA_FRAC * h * w))
    out: list[list[Detection]] = []
    for i in range(n):
        found = []
        for c in range(k):
            ids, areas = torch.unique(comps[i, c], return_counts=True)
            for cid, area in zip(ids.tolist(), areas.tolist()):
                if cid == 0 or area < min_area:
                    continue
                ys, xs = torch.nonzero(comps[i, c] == cid, as_tuple=True)
                y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
                crop = comps[i, c, y0:y1, x0:x1] == cid
                found.append(Detection(colors[c], classify_shape(crop), float(xs.float().mean()),
                                       float(ys.float().mean()), int(area)))
        out.append(sorted(found, key=lambda d: -d.area))
    return out


# --------------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------------

# The matching is searched exhaustively; beyond this many detections (largest kept) the image
# cannot score well anyway, and the denominator still counts every detection.
MAX_MATCHED_DETECTIONS = 8


def relation_holds(relation: str, a: Detection, b: Detection) -> bool:
    """Whether `a` is `relation` `b` (image y grows downwards): the stated axis must dominate."""
    dx, dy = b.cx - a.cx, b.cy - a.cy
    if relation == "left of":
        return dx > abs(dy)
    if relation == "right of":
        return -dx > abs(dy)
    if relation == "above":
        return dy > abs(dx)
    if relation == "below":
        return -dy > abs(dx)
    raise ValueError(f"unknown relation {relation!r}; expected one of {RELATIONS}")


@dataclass(frozen=True)
class Verdict:
    """The score of one image against one prompt, with the checks the evaluation breaks down by."""

    strict: float
    partial: float
    count_ok: bool  # as many objects detected as the prompt describes
    colors_ok: bool  # the detected colors are the expected ones (as a multiset)
    shapes_ok: bool  # the detected shapes are the expected ones (as a multiset)
    relation_ok: bool | None  # None for prompts without a relation
    detections: list[Detection] = field(default_factory=list)


def _sim(expected: tuple[str, str], det: Detection) -> float:
    return 0.5 * (expected[0] == det.color) + 0.5 * (expected[1] == det.shape)


def score_detections(prompt: ShapesPrompt, detections: list[Detection]) -> Verdict:
    """Score one image's detections against a parsed prompt (formula in the module docstring)."""
    expected = prompt.expected()
    n_e = len(expected)
    pool = detections[:MAX_MATCHED_DETECTIONS]
    has_rel = prompt.relation is not None
    best = 0.0
    best_rel = False if has_rel else None
    if len(prompt.phrases) == 1:
        # All expected objects are alike: the best matching takes the most similar detections.
        sims = sorted((_sim(expected[0], d) for d in detections), reverse=True)
        return _verdict(expected, detections, sum(sims[:n_e]), None)
    # Each expected object takes a distinct detection or none (None); relations join objects 0 and 1.
    slots = list(range(len(pool))) + [None] * n_e
    for assign in set(itertools.permutations(slots, n_e)):
        total = sum(_sim(e, pool[j]) for e, j in zip(expected, assign) if j is not None)
        rel = False
        if has_rel and assign[0] is not None and assign[1] is not None:
            a, b = pool[assign[0]], pool[assign[1]]
            rel = _sim(expected[0], a) > 0 and _sim(expected[1], b) > 0 and relation_holds(prompt.relation, a, b)
        if total + rel > best + bool(best_rel):
            best, best_rel = total, rel if has_rel else None
    return _verdict(expected, detections, best, best_rel)


def _verdict(expected: list[tuple[str, str]], detections: list[Detection], sims: float,
             rel: bool | None) -> Verdict:
    """The verdict for matched similarity sum `sims` and relation outcome `rel` (None: no relation)."""
    n_e, n_d = len(expected), len(detections)
    partial = (sims + bool(rel)) / (max(n_e, n_d) + (rel is not None))
    return Verdict(
        strict=float(partial == 1.0),
        partial=float(partial),
        count_ok=n_e == n_d,
        colors_ok=sorted(c for c, _ in expected) == sorted(d.color for d in detections),
        shapes_ok=sorted(s for _, s in expected) == sorted(str(d.shape) for d in detections),
        relation_ok=rel,
        detections=list(detections),
    )


def check_images(images: Tensor, where: str = "images") -> Tensor:
    """Validate `images` as float [N,3,H,W] in [0,1] and return them as float32 on the CPU."""
    if not isinstance(images, Tensor):
        raise TypeError(f"{where}: expected a torch.Tensor [N,3,H,W] float in [0,1], got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"{where}: expected shape [N,3,H,W] (RGB, channels first), got {list(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"{where}: expected a float tensor with values in [0,1], got dtype {images.dtype}")
    images = images.detach().float().cpu()
    if images.numel():
        lo, hi = float(images.min()), float(images.max())
        if not (lo >= -1e-4 and hi <= 1 + 1e-4):  # also catches NaN
            raise ValueError(
                f"{where}: expected values in [0,1], got range [{lo:.4g}, {hi:.4g}] "
                "(images in [-1,1] need (x + 1) / 2; uint8 images need x / 255)"
            )
    return images.clamp(0.0, 1.0)


def verify(images: Tensor, prompts: list[str]) -> list[Verdict]:
    """Score each image of `images` [N,3,H,W] in [0,1] against its prompt (N prompts)."""
    images = check_images(images)
    if len(prompts) != images.shape[0]:
        raise ValueError(f"got {images.shape[0]} images but {len(prompts)} prompts; give one prompt per image")
    parsed = [parse_prompt(p) for p in prompts]
    return [score_detections(p, d) for p, d in zip(parsed, detect_objects(images))]


class ShapesReward:
    """Verifiable reward of the shapes world: strict 0/1 or partial credit in [0,1] per image."""

    name = "shapes"
    reads_media = ("outputs:images",)  # decoded media it reads (reward server, payload.media_reads)
    groupwise = False

    @dataclass
    class Config:
        mode: str = "strict"
        """'strict': 1 only if the image shows exactly the prompt; 'partial': share of items satisfied."""
        unparseable: str = "error"
        """For prompts outside the shapes language: 'error' raises, 'nan' scores NaN (not applicable)."""

    def __init__(self, config: Config | None = None):
        self.config = config or ShapesReward.Config()
        if self.config.mode not in ("strict", "partial"):
            raise ValueError(f"ShapesReward.Config.mode: expected 'strict' or 'partial', got {self.config.mode!r}")
        if self.config.unparseable not in ("error", "nan"):
            raise ValueError(
                f"ShapesReward.Config.unparseable: expected 'error' or 'nan', got {self.config.unparseable!r}"
            )

    def __call__(self, outputs: Tensor, conds: list, group_ids: Tensor | None = None, **metadata) -> Tensor:
        """Scores [N] float32 for images `outputs` [N,3,H,W] in [0,1] and their prompts `conds`."""
        images = check_images(outputs, where="ShapesReward outputs")
        if len(conds) != images.shape[0]:
            raise ValueError(f"ShapesReward: {images.shape[0]} images but {len(conds)} prompts")
        parsed: list[ShapesPrompt | None] = []
        for c in conds:
            try:
                parsed.append(parse_prompt(c))
            except PromptError:
                if self.config.unparseable == "error":
                    raise
                parsed.append(None)
        keep = [i for i, p in enumerate(parsed) if p is not None]
        out = torch.full((images.shape[0],), float("nan"), dtype=torch.float32)
        if keep:
            for i, dets in zip(keep, detect_objects(images[keep])):
                v = score_detections(parsed[i], dets)
                out[i] = v.strict if self.config.mode == "strict" else v.partial
        return out
