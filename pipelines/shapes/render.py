"""Renders a shapes-language prompt into an RGB image: flat colored shapes on white, random layout.

Every object is an axis-aligned circle, square or apex-up isosceles triangle (base = height) inside a
square box of random side (25-37.5% of the image) at a random sub-pixel position; boxes keep a gap
of ~9% of the image between them. A relation ("A left of B") is drawn with the stated axis clearly
dominating: between the two shapes' centroids, |major offset| >= 2 |minor offset| + 1 px, so the
verifier's rule (major > |minor|) holds with margin. Shapes are drawn at 4x and box-downsampled, so
edges are anti-aliased (the verifier classifies colors by hue, which blending with white keeps).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from mmgrpo.pipelines.shapes import IMAGE_SIZE
from mmgrpo.rewards.image.shapes import COLORS, ShapesPrompt, parse_prompt

BACKGROUND = (255, 255, 255)
SUPERSAMPLE = 4
MIN_SIDE, MAX_SIDE = 0.3, 0.42  # box side, as a share of the image side
GAP = 0.09  # least gap between two boxes, as a share of the image side
MARGIN = 0.03  # least distance from a box to the image border
MAX_TRIES = 500  # layouts (sizes drawn anew each time)
POSITION_TRIES = 50  # positions per object within one layout


@dataclass(frozen=True)
class PlacedObject:
    """One shape to draw: color, shape and its box (top-left corner and side, in pixels)."""

    color: str
    shape: str
    x0: float
    y0: float
    side: float

    @property
    def centroid(self) -> tuple[float, float]:
        """Center of mass (x, y); a triangle's lies 2/3 of the way down from its apex."""
        cy = self.y0 + (2 / 3 if self.shape == "triangle" else 1 / 2) * self.side
        return self.x0 + self.side / 2, cy


def _separated(a: PlacedObject, b: PlacedObject, gap: float) -> bool:
    return (a.x0 + a.side + gap <= b.x0 or b.x0 + b.side + gap <= a.x0
            or a.y0 + a.side + gap <= b.y0 or b.y0 + b.side + gap <= a.y0)


def _relation_clear(relation: str, a: PlacedObject, b: PlacedObject) -> bool:
    (ax, ay), (bx, by) = a.centroid, b.centroid
    major, minor = {"left of": (bx - ax, by - ay), "right of": (ax - bx, by - ay),
                    "above": (by - ay, bx - ax), "below": (ay - by, bx - ax)}[relation]
    return major >= 2 * abs(minor) + 1.0


def layout(prompt: ShapesPrompt, rng: np.random.Generator, size: int = IMAGE_SIZE) -> list[PlacedObject]:
    """A random placement of the prompt's objects satisfying its relation, by rejection sampling.

    Objects are placed one after the other, each at the first of up to `POSITION_TRIES` random
    positions clear of those already placed; a layout that gets stuck (or breaks the relation) is
    started over, with box sides shrinking gradually towards the smallest (four large boxes may not
    fit). Raises RuntimeError if `MAX_TRIES` layouts fail (the image is too small).
    """
    objects = prompt.expected()
    lo, hi = MIN_SIDE * size, MAX_SIDE * size
    gap, margin = GAP * size, MARGIN * size
    for attempt in range(MAX_TRIES):
        top = hi - (hi - lo) * attempt / MAX_TRIES
        placed: list[PlacedObject] = []
        for color, shape in objects:
            side = float(rng.uniform(lo, top))
            for _ in range(POSITION_TRIES):
                x0, y0 = rng.uniform(margin, size - margin - side, size=2)
                obj = PlacedObject(color, shape, float(x0), float(y0), side)
                if all(_separated(obj, other, gap) for other in placed):
                    placed.append(obj)
                    break
            else:
                break
        else:
            if prompt.relation is None or _relation_clear(prompt.relation, placed[0], placed[1]):
                return placed
    raise RuntimeError(f"could not place {len(objects)} objects in a {size}px image after {MAX_TRIES} tries")


def draw(objects: list[PlacedObject], size: int = IMAGE_SIZE) -> np.ndarray:
    """Draw placed objects on white: uint8 [H, W, 3]."""
    k = SUPERSAMPLE
    img = Image.new("RGB", (size * k, size * k), BACKGROUND)
    pen = ImageDraw.Draw(img)
    for o in objects:
        x0, y0, x1, y1 = o.x0 * k, o.y0 * k, (o.x0 + o.side) * k - 1, (o.y0 + o.side) * k - 1
        fill = COLORS[o.color]
        if o.shape == "circle":
            pen.ellipse([x0, y0, x1, y1], fill=fill)
        elif o.shape == "square":
            pen.rectangle([x0, y0, x1, y1], fill=fill)
        elif o.shape == "triangle":
            pen.polygon([(x0, y1), (x1, y1), ((x0 + x1) / 2, y0)], fill=fill)
        else:
            raise ValueError(f"unknown shape {o.shape!r}")
    return np.asarray(img.resize((size, size), Image.BOX))


def render(prompt: str | ShapesPrompt, seed: int, size: int = IMAGE_SIZE) -> np.ndarray:
    """Render `prompt` with the layout drawn from `seed`: uint8 [H, W, 3]."""
    parsed = parse_prompt(prompt) if isinstance(prompt, str) else prompt
    return draw(layout(parsed, np.random.default_rng(int(seed)), size), size)


def to_tensor(images: list[np.ndarray] | np.ndarray) -> Tensor:
    """uint8 images [N, H, W, 3] -> float32 [N, 3, H, W] in [0, 1]."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0


def render_batch(prompts: list[str], seeds: list[int], size: int = IMAGE_SIZE) -> Tensor:
    """Render one image per (prompt, seed): float32 [N, 3, H, W] in [0, 1]."""
    if len(prompts) != len(seeds):
        raise ValueError(f"render_batch: {len(prompts)} prompts but {len(seeds)} seeds; give one seed per prompt")
    return to_tensor([render(p, s, size) for p, s in zip(prompts, seeds)])
