"""The built-in demo end to end (shortened), and its LoRA through diffusers itself.

The full demo (`mmgrpo demo`, default steps) is the slow test at the bottom; that GRPO on the flow stack
learns (both directions of a reward) is `tests/flow/test_learns.py`.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

try:
    from mmgrpo.pipelines.shapes import base_model_path

    BASE = base_model_path()
except (ImportError, FileNotFoundError) as exc:          # pragma: no cover - the base ships with the package
    BASE = None
    REASON = str(exc)

pytestmark = pytest.mark.skipif(BASE is None, reason="the shapes base model is not installed")


def _demo(run: Path, *args: str, timeout: int = 1500) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    return subprocess.run([sys.executable, "-m", "mmgrpo.cli", "demo", "--run-dir", str(run), *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


def _stock_scores(lora: Path | None, prompts: list[str], seeds: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Held-out images from the stock StableDiffusion3Pipeline (optionally with the LoRA) and their partial scores."""
    from mmgrpo.modalities.flow.sd3 import SD3Spec
    from mmgrpo.pipelines.shapes import sampling_kwargs
    from mmgrpo.rewards.image.shapes import ShapesReward

    pipe = SD3Spec.load(str(BASE), torch.float32)
    pipe.set_progress_bar_config(disable=True)
    if lora is not None:
        pipe.load_lora_weights(str(lora))
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    kw = sampling_kwargs()
    images = pipe(prompts, generator=gens, output_type="pt", **kw).images.float()
    return images, ShapesReward(ShapesReward.Config(mode="partial"))(images, prompts)


def test_short_demo_writes_everything_and_its_lora_loads_in_diffusers(tmp_path):
    run = tmp_path / "demo"
    res = _demo(run, "--steps", "3", "batch_size=32", "micro_batch_size=16", "grad_accum=1", "eval_group_size=1",
                "checkpoint_every=3", "sample_every=3")
    assert res.returncode == 0, res.stderr[-3000:]
    for name in ("before_after.png", "curves.png", "metrics.jsonl", "demo_result.json", "config.yaml",
                 "lora/pytorch_lora_weights.safetensors", "samples/eval_before.png", "samples/eval_after.png"):
        assert (run / name).is_file(), name
    result = json.loads((run / "demo_result.json").read_text())
    assert 0 <= result["strict_before"] <= 1 and 0 <= result["strict_after"] <= 1
    assert "held-out accuracy" in res.stdout and "mmgrpo sample" in res.stdout   # tells the user what next
    assert "uncertain by about +-" in res.stdout                                 # and how far to trust it

    # The saved LoRA goes into the stock pipeline through diffusers' own loader and changes its images.
    from mmgrpo.pipelines.shapes import load_prompts

    prompts = load_prompts("eval")[:8]
    base_imgs, _ = _stock_scores(None, prompts, list(range(8)))
    lora_imgs, _ = _stock_scores(run / "lora", prompts, list(range(8)))
    assert (base_imgs - lora_imgs).abs().max() > 1e-3


@pytest.mark.slow
def test_full_demo_keeps_held_out_accuracy_and_its_lora_matches_in_diffusers(tmp_path):
    """`mmgrpo demo` at its defaults, as it measures today (pipelines/shapes/README.md): the KL-anchored
    recipe does not damage the model (held-out accuracy within noise of the base; the windowed and NFT-style
    variants measured there lose 5-30 points), and the LoRA applies in the stock pipeline without damage.

    The issue's +25-point target is NOT asserted: no recipe reaches it on 2 CPU cores (pipelines/shapes/README.md)."""
    run = tmp_path / "demo"
    res = _demo(run, timeout=3600)
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads((run / "demo_result.json").read_text())
    assert result["strict_after"] > result["strict_before"] - 0.06, result
    assert result["partial_after"] > result["partial_before"] - 0.03, result
    from mmgrpo.pipelines.shapes import load_prompts

    prompts = load_prompts("eval")[:32]
    _, base = _stock_scores(None, prompts, list(range(32)))
    _, tuned = _stock_scores(run / "lora", prompts, list(range(32)))
    assert (tuned - base).abs().max() > 0                  # the LoRA is applied
    assert tuned.mean() > base.mean() - 0.05, (tuned.mean(), base.mean())
