"""`mmgrpo demo`: text-to-image GRPO on the built-in shapes world, end to end on a laptop CPU.

It trains a LoRA on the shipped tiny SD3 (real diffusers classes) with the Flow-GRPO SDE against the
analytic shapes verifier, then prints held-out accuracy before and after, and writes image grids (same
prompts and seeds), the reward curve and the LoRA (loadable with `pipe.load_lora_weights`).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

DEMO_CONFIG = "pkg://mmgrpo.configs/flow/shapes_demo.yaml"


def side_by_side(before: Path, after: Path, out: Path, scale: int = 3) -> Path:
    """One PNG: the held-out grid before training (left) and after (right), same prompts and seeds."""
    from PIL import Image, ImageDraw

    a, b = Image.open(before).convert("RGB"), Image.open(after).convert("RGB")
    a = a.resize((a.width * scale, a.height * scale), Image.NEAREST)
    b = b.resize((b.width * scale, b.height * scale), Image.NEAREST)
    pad, top = 16, 28
    canvas = Image.new("RGB", (a.width + b.width + 3 * pad, max(a.height, b.height) + top + pad), "white")
    canvas.paste(a, (pad, top))
    canvas.paste(b, (2 * pad + a.width, top))
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, 8), "base model (held-out prompts)", fill="black")
    draw.text((2 * pad + a.width, 8), "after GRPO (same prompts, same seeds)", fill="black")
    canvas.save(out)
    return out


def demo_main(argv: list[str] | None = None) -> int:
    from mmgrpo.cli import EXIT_FAILED, INPUT_ERRORS, Parser, fail, int_at_least

    p = Parser(prog="mmgrpo demo", description=__doc__.split("\n\n")[0],
               epilog="exit codes: 0 done, 1 the run failed, 2 bad input")
    p.add_argument("overrides", nargs="*", help="key.path=value overrides of the demo recipe "
                   "(configs/flow/shapes_demo.yaml), e.g. steps=10 run_dir=runs/my_demo")
    p.add_argument("--steps", type=int_at_least(1), default=None, help="GRPO steps (default: the recipe's)")
    p.add_argument("--run-dir", default=None, help="run directory (default runs/shapes_demo)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted demo run")
    a = p.parse_intermixed_args(argv)

    from mmgrpo.config import load_config
    from mmgrpo.trainer import Trainer, TrainingError

    overrides = list(a.overrides)
    if a.steps is not None:
        overrides.append(f"steps={a.steps}")
    if a.run_dir is not None:
        overrides.append(f"run_dir={a.run_dir}")
    try:
        cfg = load_config(DEMO_CONFIG, overrides)
        if not a.resume:
            cfg.overwrite = True
        trainer = Trainer(cfg)
    except INPUT_ERRORS as exc:
        return fail("mmgrpo demo", exc)
    run = Path(cfg.run_dir)
    print(f"mmgrpo demo: GRPO on the shapes world, {cfg.steps} steps x {cfg.batch_size} images "
          f"({cfg.batch_size // cfg.data.group_size} prompts x {cfg.data.group_size}), "
          f"{len(trainer.eval_prompts)} held-out prompts x {cfg.eval_group_size} seeds; writing to {run}/")
    t0 = time.perf_counter()
    try:
        summary = trainer.fit(resume=a.resume)
    except TrainingError as exc:
        return fail("mmgrpo demo", exc, EXIT_FAILED, expected=True)
    minutes = (time.perf_counter() - t0) / 60
    before, after = summary.get("eval_before", {}), summary.get("eval_after", {})
    lora = run / "lora"
    if summary.get("checkpoint") and (Path(summary["checkpoint"]) / "export").is_dir():
        if lora.exists():
            shutil.rmtree(lora)
        shutil.copytree(Path(summary["checkpoint"]) / "export", lora)
    grids = run / "samples"
    compare = None
    if (grids / "eval_before.png").is_file() and (grids / "eval_after.png").is_file():
        compare = side_by_side(grids / "eval_before.png", grids / "eval_after.png", run / "before_after.png")
    result = {"minutes": round(minutes, 2), "steps": cfg.steps,
              "strict_before": before.get("eval/shapes_strict"), "strict_after": after.get("eval/shapes_strict"),
              "partial_before": before.get("eval/shapes_partial"), "partial_after": after.get("eval/shapes_partial")}
    (run / "demo_result.json").write_text(json.dumps(result, indent=2) + "\n")
    print("\nheld-out accuracy      base    trained")
    for key in ("strict", "partial"):
        b, t = result[f"{key}_before"], result[f"{key}_after"]
        if b is not None and t is not None:
            print(f"  {key:<20} {b:7.3f}  {t:7.3f}   ({(t - b) * 100:+.1f} points)")
    n_eval = len(trainer.eval_prompts) * cfg.eval_group_size
    if result["strict_before"] is not None and n_eval:
        p = result["strict_before"]
        print(f"  (one measurement of strict accuracy on {n_eval} images is uncertain by about "
              f"+-{196 * (p * (1 - p) / n_eval) ** 0.5:.1f} points, 95%; raise eval_group_size to narrow it)")
    print(f"\ntook {minutes:.1f} min. Look at:\n"
          f"  {compare or grids}   (left: base, right: trained; same prompts and seeds)\n"
          f"  {summary.get('plot', run / 'curves.png')}   (reward curves)\n"
          f"  {lora}/   (the LoRA: StableDiffusion3Pipeline.load_lora_weights('{lora}'))\n"
          "Next:\n"
          f"  mmgrpo sample {DEMO_CONFIG} --lora {lora} --prompt \"two red circles\" --out {run}/mine\n"
          f"  mmgrpo eval {DEMO_CONFIG} --lora {lora}\n"
          f"  tensorboard --logdir {run}/tb")
    return 0
