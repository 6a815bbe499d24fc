"""Evaluation of shapes models: seeds, batch-size independence, the summary's arithmetic, the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from mmgrpo.pipelines.shapes.evaluate import eval_pairs, main, sample_images, summarize
from mmgrpo.pipelines.shapes.model import ModelSize, build_pipeline
from mmgrpo.rewards.image.shapes import Verdict

TINY = ModelSize(vae_channels=(8, 8), text_width=16, text_layers=2, text_projection=8, heads=2, head_dim=8, layers=1)


def test_eval_pairs_seed_formula():
    prompts, seeds = eval_pairs(["p0", "p1"], (0, 3))
    # image seed = 100000 * seed + prompt index
    assert prompts == ["p0", "p1", "p0", "p1"] and seeds == [0, 1, 300000, 300001]


def test_samples_do_not_depend_on_batch_size(tmp_path):
    pipe = build_pipeline(TINY, tmp_path / "tok")
    prompts, seeds = ["a red circle", "two blue squares", "a red circle"], [5, 6, 7]
    together = sample_images(pipe, prompts, seeds, batch_size=3, num_inference_steps=2)
    alone = sample_images(pipe, prompts, seeds, batch_size=1, num_inference_steps=2)
    assert together.shape == (3, 3, 32, 32)
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)
    assert not torch.allclose(together[0], together[2])  # same prompt, other seed, other image


def v(strict, partial, rel=None, count=True, colors=True, shapes=True):
    return Verdict(float(strict), float(partial), count, colors, shapes, rel)


def test_summary_arithmetic():
    prompts = ["two red circles", "a red circle", "a red circle and a blue square",
               "a red circle left of a blue square", "a red circle above a blue square"]
    verdicts = [v(1, 1), v(0, 0.5, colors=False), v(0, 0.75, shapes=False), v(1, 1, rel=True),
                v(0, 2 / 3, rel=False)]
    s = summarize(prompts, verdicts)
    # counting: strict (1 + 0) / 2 = 0.5, partial (1 + 0.5) / 2 = 0.75; composition 0 / 0.75;
    # position strict 0.5, partial (1 + 2/3) / 2 = 5/6
    assert s["by_category"]["counting"]["strict"] == 0.5 and s["by_category"]["counting"]["partial"] == 0.75
    assert s["by_category"]["counting"]["colors_ok"] == 0.5
    assert s["by_category"]["position"]["relation_ok"] == 0.5
    # overall = mean of the category means: strict (0.5 + 0 + 0.5) / 3, partial (0.75 + 0.75 + 5/6) / 3
    assert s["overall"]["strict"] == pytest.approx(1 / 3)
    assert s["overall"]["partial"] == pytest.approx((0.75 + 0.75 + 5 / 6) / 3)
    # per image: strict 2 / 5
    assert s["per_image"]["strict"] == pytest.approx(0.4)
    assert s["counting_by_count"]["2"]["strict"] == 1.0 and s["counting_by_count"]["1"]["strict"] == 0.0
    assert s["position_by_relation"]["above"]["partial"] == pytest.approx(2 / 3)


def test_cli_prints_json_for_the_shipped_model(capsys):
    # no --model: the shipped base model
    assert main(["--limit", "2", "--seeds", "0", "--steps", "2", "--threads", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["per_image"]["n"] == 2 and out["settings"]["num_inference_steps"] == 2
    assert set(out["by_category"]) == {"counting", "composition", "position"}
