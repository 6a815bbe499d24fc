"""Mislabelled captions: the wrong scenes the v2 base is trained on, and what the verifier makes of them."""

import random

import pytest

from mmgrpo.pipelines.shapes.captions import extra_object_scene, mislabel, mislabel_scene
from mmgrpo.pipelines.shapes.pretrain import scene_text
from mmgrpo.pipelines.shapes.render import render, to_tensor
from mmgrpo.rewards.image.shapes import Phrase, ShapesPrompt, format_prompt, parse_prompt, verify


def test_extra_object_scene_appends_one_object_and_leaves_full_scenes_alone():
    p = parse_prompt("a red circle and a blue square")
    q = extra_object_scene(p, random.Random(0))
    assert q.phrases[:2] == p.phrases and len(q.phrases) == 3 and q.phrases[2].count == 1
    four = parse_prompt("four green triangles")
    assert extra_object_scene(four, random.Random(0)) == four          # a fifth object does not fit in 32 px
    rel = parse_prompt("a red circle left of a blue square")
    assert extra_object_scene(rel, random.Random(1)).relation == "left of"


def test_mislabel_scene_rates_kinds_and_errors():
    rng = random.Random(0)
    caps = ["two red circles"] * 2000
    scenes = [mislabel_scene(c, 0.6, rng, "extra") for c in caps]
    extra = sum(len(s.expected()) == 3 for s in scenes) / len(scenes)
    assert extra == pytest.approx(0.6, abs=0.03)
    assert mislabel_scene("two red circles", 0.0, rng, "extra") == parse_prompt("two red circles")
    # kind "attribute" draws the same numbers as the text-level mislabel (the v1 swap data is unchanged)
    a = [format_prompt(mislabel_scene(c, 0.5, random.Random(3), "attribute")) for c in ["two red circles"] * 5]
    b = [mislabel(c, 0.5, random.Random(3)) for c in ["two red circles"] * 5]
    assert a == b
    with pytest.raises(ValueError, match="kind"):
        mislabel_scene("two red circles", 0.5, rng, "swap")
    with pytest.raises(ValueError, match="rate"):
        mislabel_scene("two red circles", 1.5, rng, "extra")


def test_an_extra_object_costs_strict_credit_and_its_scene_text_is_verified():
    scene = ShapesPrompt((Phrase(1, "red", "circle"), Phrase(1, "blue", "square"), Phrase(1, "green", "triangle")),
                         "left of")
    text = scene_text(scene)
    assert text == "a red circle and a blue square and a green triangle"
    img = to_tensor([render(scene, 5)])
    assert verify(img, [text])[0].strict == 1.0                         # the render shows exactly its scene
    v = verify(img, ["a red circle left of a blue square"])[0]
    assert v.strict == 0.0 and not v.count_ok                            # the caption's prompt: one object too many
