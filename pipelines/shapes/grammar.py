"""Generates the shapes-world prompts and their fixed train / held-out split (and writes the prompt files).

The language itself is defined in `mmgrpo.rewards.image.shapes`; this module enumerates it:
counting ("two red circles", counts 1-4), composition ("a red circle and a blue square") and
position ("a blue square left of a yellow triangle"), in the spirit of GenEval's tasks.

The split is by *combination*, not by text: prompts that describe the same scene share a key
("A left of B" and "B right of A"; "A and B" and "B and A"), and a fixed, seeded 20% of the keys of
each category is held out. Held-out combinations appear neither in pretraining nor in RL training,
while every count, color, shape and relation still occurs in training, so evaluation measures
compositional generalization. Re-run `python -m mmgrpo.pipelines.shapes.grammar` to rewrite
`prompts_train.txt` / `prompts_eval.txt` (the files are the contract; this makes them reproducible).
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from mmgrpo.pipelines.shapes import HERE
from mmgrpo.rewards.image.shapes import (
    CANONICAL_COUNT,
    COLORS,
    RELATIONS,
    SHAPES,
    Phrase,
    ShapesPrompt,
    format_prompt,
    parse_prompt,
)

SPLIT_SEED = 1234
HELD_OUT_FRACTION = 0.2
EVAL_SEEDS = (0, 1, 2, 3)
"""Seeds each held-out prompt is sampled with in evaluation (so base and trained models see the same noise)."""


def objects() -> list[tuple[str, str]]:
    """Every (color, shape) of the language, in a fixed order."""
    return [(c, s) for c in COLORS for s in SHAPES]


def all_prompts() -> list[ShapesPrompt]:
    """Every prompt of the three categories, in a fixed order."""
    out = [ShapesPrompt((Phrase(n, c, s),)) for n in CANONICAL_COUNT for c, s in objects()]
    pairs = [(a, b) for a in objects() for b in objects() if a != b]
    out += [ShapesPrompt((Phrase(1, *a), Phrase(1, *b))) for a, b in pairs]
    out += [ShapesPrompt((Phrase(1, *a), Phrase(1, *b)), rel) for rel in RELATIONS for a, b in pairs]
    return out


def combination_key(prompt: ShapesPrompt) -> tuple:
    """The scene a prompt describes, the same for its equivalent phrasings."""
    objs = tuple((p.count, p.color, p.shape) for p in prompt.phrases)
    if prompt.relation is None:
        return (prompt.category,) + tuple(sorted(objs))
    a, b = objs
    if prompt.relation in ("right of", "below"):
        a, b = b, a  # "A right of B" is "B left of A"
    axis = "horizontal" if prompt.relation in ("left of", "right of") else "vertical"
    return ("position", axis, a, b)


def held_out_keys() -> set[tuple]:
    """The fixed held-out combinations: a seeded HELD_OUT_FRACTION of each category's keys."""
    rng = random.Random(SPLIT_SEED)
    held: set[tuple] = set()
    by_category: dict[str, list[tuple]] = {}
    for p in all_prompts():
        key = combination_key(p)
        if key not in by_category.setdefault(p.category, []):
            by_category[p.category].append(key)
    for keys in by_category.values():
        held |= set(rng.sample(keys, round(HELD_OUT_FRACTION * len(keys))))
    return held


def split_prompts() -> dict[str, list[str]]:
    """{'train': [...], 'eval': [...]} prompt texts; no combination is in both."""
    held = held_out_keys()
    out: dict[str, list[str]] = {"train": [], "eval": []}
    for p in all_prompts():
        out["eval" if combination_key(p) in held else "train"].append(format_prompt(p))
    return out


DEMO_CATEGORIES = ("counting", "composition")
"""The categories of the demo world (`mmgrpo demo`): its base is trained and evaluated on these only."""


def write_prompt_files(folder: Path = HERE) -> dict[str, Path]:
    """Write `prompts_train.txt` and `prompts_eval.txt` (one prompt a line) into `folder`, and the demo
    world's subsets of them (`DEMO_CATEGORIES`) as `prompts_demo_train.txt` / `prompts_demo_eval.txt`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, prompts in split_prompts().items():
        paths[split] = folder / f"prompts_{split}.txt"
        paths[split].write_text("\n".join(prompts) + "\n")
        demo = [t for t in prompts if parse_prompt(t).category in DEMO_CATEGORIES]
        paths[f"demo_{split}"] = folder / f"prompts_demo_{split}.txt"
        paths[f"demo_{split}"].write_text("\n".join(demo) + "\n")
    return paths


def category(text: str) -> str:
    """The category of a prompt text: counting, composition or position."""
    return parse_prompt(text).category


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE, help="folder for the two prompt files")
    args = ap.parse_args(argv)
    for split, path in write_prompt_files(args.out).items():
        print(f"{split}: {len(path.read_text().splitlines())} prompts -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
