"""Evaluates a shapes-world model: samples held-out prompts with `StableDiffusion3Pipeline` and verifies them.

    python -m mmgrpo.pipelines.shapes.evaluate --model DIR        # prints JSON; no --model: the base model

Every held-out prompt (`prompts_eval.txt`) is sampled once per seed of `EVAL_SEEDS` (image seed
= 100000 * seed + prompt index, one `torch.Generator` per image, so results do not depend on the
batch size), at the demo's settings (`mmgrpo.pipelines.shapes.sampling_kwargs()`), and scored by
`mmgrpo.rewards.image.shapes`. "overall" is the mean of the three category means (as GenEval's
overall score); "per_image" is the plain mean over images.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch import Tensor

from mmgrpo.pipelines.shapes import load_prompts, sampling_kwargs
from mmgrpo.pipelines.shapes.grammar import EVAL_SEEDS
from mmgrpo.rewards.image.shapes import CATEGORIES, Verdict, parse_prompt, verify


def eval_pairs(prompts: list[str], seeds: tuple[int, ...] = EVAL_SEEDS) -> tuple[list[str], list[int]]:
    """(prompts, image seeds): each prompt once per seed, image seed = 100000 * seed + prompt index."""
    pairs = [(p, 100_000 * s + j) for s in seeds for j, p in enumerate(prompts)]
    return [p for p, _ in pairs], [s for _, s in pairs]


@torch.no_grad()
def sample_images(pipe, prompts: list[str], seeds: list[int], batch_size: int = 64, **overrides) -> Tensor:
    """Images [N,3,H,W] in [0,1] from `pipe`, one generator per image seeded with its seed."""
    kwargs = {**sampling_kwargs(), **overrides}
    pipe.set_progress_bar_config(disable=True)
    out = []
    for i in range(0, len(prompts), batch_size):
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds[i:i + batch_size]]
        out.append(pipe(prompts[i:i + batch_size], generator=gens, output_type="pt", **kwargs).images.float())
    return torch.cat(out)


def _rates(verdicts: list[Verdict]) -> dict:
    n = len(verdicts)
    if n == 0:
        return {"n": 0}
    rel = [v.relation_ok for v in verdicts if v.relation_ok is not None]
    out = {
        "strict": sum(v.strict for v in verdicts) / n,
        "partial": sum(v.partial for v in verdicts) / n,
        "count_ok": sum(v.count_ok for v in verdicts) / n,
        "colors_ok": sum(v.colors_ok for v in verdicts) / n,
        "shapes_ok": sum(v.shapes_ok for v in verdicts) / n,
        "n": n,
    }
    if rel:
        out["relation_ok"] = sum(rel) / len(rel)
    return out


def summarize(prompts: list[str], verdicts: list[Verdict]) -> dict:
    """Accuracies: overall (mean of category means), per image, per category, per count, per relation.

    Each group reports strict and partial accuracy and how often the object count, the colors
    (as a multiset), the shapes and (position prompts) the relation were right.
    """
    parsed = [parse_prompt(p) for p in prompts]
    by_cat = {c: _rates([v for p, v in zip(parsed, verdicts) if p.category == c]) for c in CATEGORIES}
    present = [r for r in by_cat.values() if r["n"]]
    overall = {k: sum(r[k] for r in present) / len(present) for k in ("strict", "partial")}
    counts = {}
    for n in sorted({p.phrases[0].count for p in parsed if p.category == "counting"}):
        counts[str(n)] = _rates([v for p, v in zip(parsed, verdicts)
                                 if p.category == "counting" and p.phrases[0].count == n])
    relations = {}
    for rel in sorted({p.relation for p in parsed if p.relation}):
        relations[rel] = _rates([v for p, v in zip(parsed, verdicts) if p.relation == rel])
    return {"overall": overall, "per_image": _rates(verdicts), "by_category": by_cat,
            "counting_by_count": counts, "position_by_relation": relations}


def evaluate_pipeline(pipe, prompts: list[str], seeds: list[int], batch_size: int = 64, **overrides) -> dict:
    """Sample one image per (prompt, seed), verify, summarize."""
    images = sample_images(pipe, prompts, seeds, batch_size, **overrides)
    return summarize(prompts, verify(images, prompts))


def save_grid(images: Tensor, path: Path, columns: int = 16) -> None:
    """Save images [N,3,H,W] in [0,1] as one PNG grid."""
    from PIL import Image

    n, _, h, w = images.shape
    rows = -(-n // columns)
    grid = torch.ones(rows * columns, 3, h, w)
    grid[:n] = images
    grid = grid.reshape(rows, columns, 3, h, w).permute(0, 3, 1, 4, 2).reshape(rows * h, columns * w, 3)
    Image.fromarray((grid * 255).round().byte().numpy()).save(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None,
                    help="folder loadable by StableDiffusion3Pipeline (default: the shipped base model)")
    ap.add_argument("--split", choices=("eval", "train", "demo_eval", "demo_train"), default="eval")
    ap.add_argument("--seeds", type=int, nargs="+", default=list(EVAL_SEEDS))
    ap.add_argument("--limit", type=int, default=0, help="use only the first N prompts (0 = all)")
    ap.add_argument("--steps", type=int, default=sampling_kwargs()["num_inference_steps"])
    ap.add_argument("--guidance", type=float, default=sampling_kwargs()["guidance_scale"])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 beats 2 on a shared 2-core machine)")
    ap.add_argument("--grid", type=Path, default=None, help="also save the first 64 images as a PNG grid")
    args = ap.parse_args(argv)

    from mmgrpo.pipelines.shapes import load_pipeline

    torch.set_num_threads(args.threads)
    pipe = load_pipeline(args.model)
    prompts = load_prompts(args.split)
    if args.limit:
        prompts = prompts[: args.limit]
    prompts, seeds = eval_pairs(prompts, tuple(args.seeds))
    images = sample_images(pipe, prompts, seeds, args.batch_size, num_inference_steps=args.steps,
                           guidance_scale=args.guidance)
    result = summarize(prompts, verify(images, prompts))
    result["settings"] = {"model": str(args.model or "base"), "split": args.split, "seeds": args.seeds,
                          **sampling_kwargs(), "num_inference_steps": args.steps, "guidance_scale": args.guidance}
    if args.grid:
        save_grid(images[:64], args.grid)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
