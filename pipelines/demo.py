"""`mmgrpo demo`: text-to-image RL on the built-in shapes world, end to end on a laptop CPU.

It trains a LoRA on the shipped tiny SD3 (real diffusers classes) with DiffusionNFT against the analytic shapes
verifier, then measures held-out accuracy before and after in the stock `StableDiffusion3Pipeline` (the LoRA loaded
with `load_lora_weights`, fixed seeds, paired), and writes the held-out curve, a labelled before/after grid, a
diversity figure and the LoRA.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import sys
import time
import warnings
from pathlib import Path

DEMO_CONFIG = "pkg://mmgrpo.configs/flow/shapes_demo.yaml"
FINAL_SEEDS = (0, 1, 2, 3, 4, 5, 6, 7)
"""Seeds of the final held-out measurement (image seed = 100000 * seed + prompt index, as `shapes.evaluate`)."""


# ---------------------------------------------------------------- measurement (pure functions, tested by hand)
def paired_gain(before: list[float], after: list[float]) -> dict:
    """Mean of `after - before` over paired images and its 95% normal interval (`1.96 * sd / sqrt(n)`)."""
    if len(before) != len(after) or not before:
        raise ValueError(f"paired_gain: need equally many paired scores; got {len(before)} and {len(after)}")
    d = [a - b for a, b in zip(after, before)]
    n = len(d)
    mean = sum(d) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1)) if n > 1 else 0.0
    half = 1.96 * sd / math.sqrt(n)
    return {"gain": mean, "ci95": [mean - half, mean + half], "n": n}


def diversity(images, prompts: list[str]) -> float:
    """Mean over prompts of the mean pairwise RMS pixel distance between that prompt's images ([N,3,H,W] in
    [0, 1]): 0 when every seed gives the same picture (mode collapse, the usual face of reward hacking)."""
    import torch

    by: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        by.setdefault(p, []).append(i)
    per_prompt = []
    for idx in by.values():
        if len(idx) < 2:
            continue
        x = images[torch.tensor(idx)].flatten(1).float()                          # [k, D]
        d = torch.cdist(x, x) / math.sqrt(x.shape[1])                             # RMS distance [k, k]
        k = len(idx)
        per_prompt.append(float(d.sum() / (k * (k - 1))))
    if not per_prompt:
        raise ValueError("diversity: needs at least one prompt with two or more images")
    return sum(per_prompt) / len(per_prompt)


# ---------------------------------------------------------------- the stock pipeline, quietly
@contextlib.contextmanager
def quiet_libraries():
    """No library FutureWarnings, weight-loading bars or info logs on the terminal (errors still show)."""
    import diffusers
    import transformers

    d_level, t_level = diffusers.utils.logging.get_verbosity(), transformers.utils.logging.get_verbosity()
    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", message=".*deprecated.*")
        try:
            yield
        finally:
            diffusers.utils.logging.set_verbosity(d_level)
            transformers.utils.logging.set_verbosity(t_level)
            diffusers.utils.logging.enable_progress_bar()
            transformers.utils.logging.enable_progress_bar()


def stock_samples(lora: Path | None, prompts: list[str], seeds: list[int], base: str | None = None, **sampling):
    """Images [N,3,H,W] of the stock `StableDiffusion3Pipeline` (with `load_lora_weights(lora)` when given) at the
    shapes world's sampling settings (`sampling` overrides, e.g. guidance_scale), one generator per image, and the
    verifier's verdicts."""
    from mmgrpo.pipelines.shapes import load_pipeline
    from mmgrpo.pipelines.shapes.evaluate import sample_images
    from mmgrpo.rewards.image.shapes import verify

    pipe = load_pipeline(base)
    if lora is not None:
        pipe.load_lora_weights(str(lora))
    images = sample_images(pipe, prompts, seeds, **sampling)
    return images, verify(images, prompts)


def labelled_grid(before, after, prompts: list[str], v_before, v_after, out: Path, scale: int = 5,
                  ncols: int = 4) -> Path:
    """PNG: for each prompt a cell with its base image (left) and trained image (right), each upscaled `scale`x
    and labelled with the verifier's verdict (OK, or "wrong" with its partial credit and the failed checks)."""
    from PIL import Image, ImageDraw

    from mmgrpo.media import _to_uint8

    def verdict(v) -> tuple[str, str, str]:
        if v.strict:
            return "OK", "", "darkgreen"
        fails = [name for name, ok in (("count", v.count_ok), ("colour", v.colors_ok), ("shape", v.shapes_ok))
                 if not ok]
        return f"wrong ({v.partial:.2f})", " ".join(fails), "firebrick"

    size = before.shape[-1] * scale
    gap, text_h, pad, header = 16, 30, 12, 28
    cell_w = 2 * size + gap
    n = len(prompts)
    rows = math.ceil(n / ncols)
    canvas = Image.new("RGB", (ncols * (cell_w + pad) + pad, header + rows * (size + text_h + 16 + pad) + pad),
                       "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, 8), "held-out prompts, same seeds: base (left) | after RL (right); the verifier's verdict "
              "under each image", fill="black")
    arr_b, arr_a = _to_uint8(before).transpose(0, 2, 3, 1), _to_uint8(after).transpose(0, 2, 3, 1)
    for i in range(n):
        r, c = divmod(i, ncols)
        x0, y0 = pad + c * (cell_w + pad), header + r * (size + text_h + 16 + pad)
        draw.text((x0, y0), prompts[i][:60], fill="black")
        for k, (arr, v) in enumerate(((arr_b, v_before), (arr_a, v_after))):
            x = x0 + k * (size + gap)
            canvas.paste(Image.fromarray(arr[i]).resize((size, size), Image.NEAREST), (x, y0 + 16))
            head, detail, colour = verdict(v[i])
            draw.text((x, y0 + 18 + size), head, fill=colour)
            draw.text((x, y0 + 30 + size), detail, fill=colour)
        draw.rectangle([x0 - 4, y0 - 4, x0 + cell_w + 3, y0 + 16 + size + text_h], outline="lightgray")
    canvas.save(out)
    return out


def diversity_figure(values: dict[str, float], out: Path) -> Path:
    """Bar chart of sample diversity (mean pairwise pixel distance among one prompt's seeds), base vs trained."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3))
    ax.bar(list(values), list(values.values()), color=["gray", "tab:blue"][:len(values)])
    ax.set_ylabel("mean pairwise RMS pixel distance")
    ax.set_title("sample diversity (same prompt, different seeds)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


# ---------------------------------------------------------------- the command
def demo_main(argv: list[str] | None = None) -> int:
    from mmgrpo.cli import Parser, int_at_least

    p = Parser(prog="mmgrpo demo", description=__doc__.split("\n\n")[0],
               epilog="exit codes: 0 done, 1 the run failed, 2 bad input")
    p.add_argument("overrides", nargs="*", help="key.path=value overrides of the demo recipe "
                   "(configs/flow/shapes_demo.yaml), e.g. steps=10 run_dir=runs/my_demo")
    p.add_argument("--steps", type=int_at_least(1), default=None, help="training steps (default: the recipe's)")
    p.add_argument("--run-dir", default=None, help="run directory (default runs/shapes_demo)")
    p.add_argument("--final-seeds", type=int, default=len(FINAL_SEEDS),
                   help=f"seeds per held-out prompt in the final stock-pipeline measurement (default {len(FINAL_SEEDS)})")
    p.add_argument("--resume", action="store_true", help="continue an interrupted demo run")
    a = p.parse_intermixed_args(argv)

    overrides = list(a.overrides)
    if a.steps is not None:
        overrides.append(f"steps={a.steps}")
    if a.run_dir is not None:
        overrides.append(f"run_dir={a.run_dir}")
    with quiet_libraries():
        return _run(a, overrides)


def _run(a, overrides: list[str]) -> int:
    from mmgrpo.cli import EXIT_FAILED, INPUT_ERRORS, fail
    from mmgrpo.config import load_config
    from mmgrpo.groups import resolve_data_path
    from mmgrpo.pipelines.shapes.evaluate import eval_pairs
    from mmgrpo.trainer import Trainer, TrainingError

    t0 = time.perf_counter()
    try:
        cfg = load_config(DEMO_CONFIG, overrides)
        if not a.resume:
            cfg.overwrite = True
        trainer = Trainer(cfg)
    except INPUT_ERRORS as exc:
        return fail("mmgrpo demo", exc)
    run = Path(cfg.run_dir)
    print(f"mmgrpo demo: {cfg.loss.objective} on the shapes world, {cfg.steps} steps x {cfg.batch_size} images "
          f"({cfg.batch_size // cfg.data.group_size} prompts x {cfg.data.group_size}); held-out curve every "
          f"{cfg.eval_every or cfg.steps} steps on {len(trainer.eval_prompts)} prompts x {cfg.eval_group_size} seeds; "
          f"writing to {run}/")
    try:
        summary = trainer.fit(resume=a.resume)
    except TrainingError as exc:
        return fail("mmgrpo demo", exc, EXIT_FAILED, expected=True)
    train_minutes = (time.perf_counter() - t0) / 60
    lora = run / "lora"
    if summary.get("checkpoint") and (Path(summary["checkpoint"]) / "export").is_dir():
        if lora.exists():
            shutil.rmtree(lora)
        shutil.copytree(Path(summary["checkpoint"]) / "export", lora)
    if not (lora / "pytorch_lora_weights.safetensors").is_file():
        print(f"mmgrpo demo: no LoRA was exported to {lora}", file=sys.stderr)
        return 1

    # The final measurement: the stock pipeline, base vs base + LoRA, held-out prompts, seeds never trained on.
    base = cfg.policy.get("pretrained")
    base = str(resolve_data_path(base)) if isinstance(base, str) and base.startswith("pkg://") else base
    prompts, seeds = eval_pairs(list(trainer.eval_prompts), tuple(range(max(1, a.final_seeds))))
    sampling = {"guidance_scale": float(cfg.policy.get("guidance_scale", 4.5)),
                "num_inference_steps": int(cfg.policy.get("eval_num_steps", 10))}
    img_b, v_b = stock_samples(None, prompts, seeds, base, **sampling)
    img_a, v_a = stock_samples(lora, prompts, seeds, base, **sampling)
    strict = paired_gain([v.strict for v in v_b], [v.strict for v in v_a])
    partial = paired_gain([v.partial for v in v_b], [v.partial for v in v_a])
    div = {"base": diversity(img_b, prompts), "trained": diversity(img_a, prompts)}
    n_prompts = len(trainer.eval_prompts)
    show = list(range(0, n_prompts, max(1, n_prompts // 16)))[:16]      # one seed of up to 16 prompts
    grid = labelled_grid(img_b[show], img_a[show], [prompts[i] for i in show], [v_b[i] for i in show],
                         [v_a[i] for i in show], run / "before_after.png")
    div_png = diversity_figure(div, run / "diversity.png")
    minutes = (time.perf_counter() - t0) / 60
    before, after = summary.get("eval_before", {}), summary.get("eval_after", {})
    sb, sa = sum(v.strict for v in v_b) / len(v_b), sum(v.strict for v in v_a) / len(v_a)
    pb, pa = sum(v.partial for v in v_b) / len(v_b), sum(v.partial for v in v_a) / len(v_a)
    result = {"sampling": sampling, "minutes": round(minutes, 2), "train_minutes": round(train_minutes, 2), "steps": cfg.steps,
              "images": len(prompts), "strict_before": sb, "strict_after": sa, "strict_gain": strict,
              "partial_before": pb, "partial_after": pa, "partial_gain": partial, "diversity": div,
              "trainer_eval_before": before, "trainer_eval_after": after}
    (run / "demo_result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nheld-out prompts ({n_prompts} x {len(seeds) // max(1, n_prompts)} seeds, never trained on), "
          f"stock StableDiffusion3Pipeline, {sampling['num_inference_steps']} steps, guidance "
          f"{sampling['guidance_scale']:g}:")
    print(f"  {'':<34}{'base':>8}{'trained':>9}   gain (95% interval)")
    rows = (("strict accuracy (gold)", sb, sa, strict), ("partial credit (training reward)", pb, pa, partial))
    for name, b, t, g in rows:
        lo, hi = g["ci95"]
        print(f"  {name:<34}{b:8.3f}{t:9.3f}   {100 * g['gain']:+.1f} points ({100 * lo:+.1f} .. {100 * hi:+.1f})")
    print(f"  {'diversity (pixel distance, seeds)':<34}{div['base']:8.3f}{div['trained']:9.3f}")
    print(f"\ntook {minutes:.1f} min ({train_minutes:.1f} training). Look at:\n"
          f"  {grid}   (labelled: base left, trained right; same prompts and seeds)\n"
          f"  {summary.get('plot', run / 'curves.png')}   (training reward and held-out accuracy per step)\n"
          f"  {div_png}   (sample diversity: a collapse to one picture per prompt would show here)\n"
          f"  {lora}/   (the LoRA: StableDiffusion3Pipeline.load_lora_weights('{lora}'))\n"
          "Next:\n"
          f"  mmgrpo sample {DEMO_CONFIG} --lora {lora} --prompt \"two red circles\" --out {run}/mine\n"
          f"  mmgrpo eval {DEMO_CONFIG} --lora {lora}\n"
          f"  tensorboard --logdir {run}/tb")
    return 0
