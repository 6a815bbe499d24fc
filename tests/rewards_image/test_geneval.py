"""GenEval-style reward: the prompt parser, GenEval's position and requirement rules by hand, and the
OWLv2 detection path on a tiny random Owlv2ForObjectDetection."""

from __future__ import annotations

import shutil

import pytest
import torch
from conftest import PROMPTS, assert_reward_contract, random_images

from mmgrpo.rewards.image.geneval import (
    Detection,
    GenEvalReward,
    evaluate_requirements,
    parse_geneval_prompt,
    relative_position,
    singular,
)


@pytest.mark.parametrize("prompt, expected", [
    ("a photo of a dog", {"tag": "single_object", "include": [{"class": "dog", "count": 1}], "exclude": []}),
    ("a photo of an hot dog and a cell phone", {"tag": "two_object", "include": [
        {"class": "hot dog", "count": 1}, {"class": "cell phone", "count": 1}], "exclude": []}),
    ("a photo of three buses", {"tag": "counting", "include": [{"class": "bus", "count": 3}],
                                "exclude": [{"class": "bus", "count": 4}]}),
    ("a photo of a purple teddy bear.", {"tag": "colors", "include": [
        {"class": "teddy bear", "count": 1, "color": "purple"}], "exclude": []}),
    ("a photo of a dog right of a cat", {"tag": "position", "include": [
        {"class": "cat", "count": 1}, {"class": "dog", "count": 1, "position": ["right of", 0]}], "exclude": []}),
    ("A photo of a red car and a blue bus", {"tag": "color_attr", "include": [
        {"class": "car", "count": 1, "color": "red"}, {"class": "bus", "count": 1, "color": "blue"}], "exclude": []}),
    ("two people", {"tag": "counting", "include": [{"class": "person", "count": 2}],
                    "exclude": [{"class": "person", "count": 3}]}),
])
def test_parse_geneval_templates(prompt, expected):
    assert parse_geneval_prompt(prompt) == expected


def test_parse_rejects_free_text_and_singularizes():
    assert parse_geneval_prompt("an astronaut riding a horse on mars") is None  # "riding ..." fits no template
    assert parse_geneval_prompt("a city at night") is None  # not a GenEval (COCO) object name
    assert parse_geneval_prompt("a city", classes=["city"])["include"] == [{"class": "city", "count": 1}]
    assert parse_geneval_prompt("dogs") is None  # no article or number
    assert parse_geneval_prompt("a photo of an orange")["include"] == [{"class": "orange", "count": 1}]  # fruit, not color
    assert [singular(w) for w in ("cherries", "boxes", "benches", "knives", "glass", "skis", "cats")] == \
        ["cherry", "box", "bench", "knife", "glass", "skis", "cat"]


def test_relative_position_hand_computed():
    # A centre (0.1, 0.1), B centre (0.7, 0.1): offset (-0.6, 0); sizes 0.2 + 0.2 = 0.4 per axis;
    # revised x = -(0.6 - 0.1*0.4) = -0.56; / |offset| 0.6 = -0.933 < -0.5 -> left of.
    assert relative_position((0, 0, 0.2, 0.2), (0.6, 0, 0.8, 0.2)) == {"left of"}
    assert relative_position((0.6, 0, 0.8, 0.2), (0, 0, 0.2, 0.2)) == {"right of"}
    # Offset (-0.05, 0) is inside the margin 0.1 * (0.5 + 0.5) = 0.1 -> no relation at all.
    assert relative_position((0, 0, 0.5, 0.5), (0.05, 0, 0.55, 0.5)) == set()
    # Diagonal: offset (-0.4, -0.4), revised (-0.36, -0.36), / 0.566 = -0.636 on both -> left of and above.
    assert relative_position((0.1, 0.1, 0.3, 0.3), (0.5, 0.5, 0.7, 0.7)) == {"left of", "above"}
    # Offset (-0.3, -0.1): revised (-0.26, -0.06), / 0.316 = (-0.82, -0.19) -> only left of.
    assert relative_position((0.1, 0.3, 0.3, 0.5), (0.4, 0.4, 0.6, 0.6)) == {"left of"}


def det(x0, y0, x1, y1, score=0.9, color=None):
    return Detection((x0, y0, x1, y1), score, color)


def test_evaluate_requirements_hand_computed():
    counting = {"tag": "counting", "include": [{"class": "dog", "count": 2}], "exclude": [{"class": "dog", "count": 3}]}
    two = {"dog": [det(0, 0, .1, .1), det(.5, .5, .6, .6)]}
    three = {"dog": two["dog"] + [det(.8, .8, .9, .9)]}
    assert evaluate_requirements(counting, two) == (True, 1.0, [])
    # 3 dogs: include (>=2) passes, exclude (<3) fails -> strict False, partial 1/2.
    ok, frac, reasons = evaluate_requirements(counting, three)
    assert (ok, frac) == (False, 0.5) and reasons == ["expected dog<3, found 3"]

    colors = {"include": [{"class": "car", "count": 1, "color": "red"}, {"class": "bus", "count": 1, "color": "blue"}]}
    objs = {"car": [det(0, 0, .2, .2, color="red")], "bus": [det(.5, .5, .9, .9, color="green")]}
    # checks: car count ok, car red ok, bus count ok, bus blue fails -> 3/4.
    assert evaluate_requirements(colors, objs)[:2] == (False, 0.75)
    # Only the most confident `count` objects are checked for color (GenEval's found_objects[:count]).
    objs["bus"] = [det(.5, .5, .9, .9, .95, "green"), det(.1, .5, .3, .9, .5, "blue")]
    assert evaluate_requirements(colors, objs)[:2] == (False, 0.75)

    position = {"include": [{"class": "cat", "count": 1}, {"class": "dog", "count": 1, "position": ["left of", 0]}]}
    cat = [det(.6, .4, .8, .6)]
    assert evaluate_requirements(position, {"cat": cat, "dog": [det(.1, .4, .3, .6)]}) == (True, 1.0, [])
    # dog right of the cat: counts pass (2 of 3 checks), position fails.
    assert evaluate_requirements(position, {"cat": cat, "dog": [det(.9, .4, 1, .6)]})[:2] == (False, 2 / 3)
    # No cat: cat count fails, dog count passes, the position has no target -> 1/3.
    ok, frac, reasons = evaluate_requirements(position, {"dog": [det(.1, .4, .3, .6)]})
    assert (ok, frac) == (False, 1 / 3) and "no target for dog to be left of" in reasons
    assert evaluate_requirements({"include": []}, {}) == (True, 1.0, [])


def biased_owlv2(src: str, dst, shift: float) -> str:
    """Copy of the tiny detector whose class logits are cos + shift (logit scale elu(0) + 1 = 1)."""
    from transformers import Owlv2ForObjectDetection

    model = Owlv2ForObjectDetection.from_pretrained(src)
    with torch.no_grad():
        head = model.class_head
        head.logit_shift.weight.zero_()
        head.logit_shift.bias.fill_(shift)
        head.logit_scale.weight.zero_()
        head.logit_scale.bias.zero_()
    shutil.copytree(src, dst, dirs_exist_ok=True)
    model.save_pretrained(dst)
    return str(dst)


@pytest.fixture(scope="module")
def all_detected(owlv2_dir, tmp_path_factory):
    return biased_owlv2(owlv2_dir, tmp_path_factory.mktemp("owl_all"), 50.0)  # sigmoid(cos + 50) = 1


@pytest.fixture(scope="module")
def none_detected(owlv2_dir, tmp_path_factory):
    return biased_owlv2(owlv2_dir, tmp_path_factory.mktemp("owl_none"), -50.0)


def test_geneval_contract_on_random_detector(owlv2_dir):
    reward = GenEvalReward(GenEvalReward.Config(checkpoint=owlv2_dir, batch_size=3, mode="partial"))
    prompts = ["a photo of a dog", "a photo of a red car and a blue bus", "a photo of three cats",
               "a photo of a dog left of a cat", "an astronaut riding a horse", "a photo of a cake",
               "a photo of two dogs and a cat", "a photo of a green apple"]
    out = assert_reward_contract(reward, random_images(8), prompts)
    assert torch.isnan(out[4]) and torch.isfinite(out[[0, 1, 2, 3, 5, 6, 7]]).all()
    assert ((out[torch.isfinite(out)] >= 0) & (out[torch.isfinite(out)] <= 1)).all()


def test_geneval_threshold_decides_presence(all_detected, none_detected):
    images = random_images(2, seed=5)
    conds = ["a photo of a dog", "a photo of a cake"]
    meta = [None, {"tag": "single_object", "include": [], "exclude": [{"class": "cake", "count": 1}]}]
    every = GenEvalReward(GenEvalReward.Config(checkpoint=all_detected))
    nothing = GenEvalReward(GenEvalReward.Config(checkpoint=none_detected))
    # Everything detected: the dog is there (1); "fewer than 1 cake" fails (0). Nothing detected: the reverse.
    torch.testing.assert_close(every(images, conds, metadata=meta), torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(nothing(images, conds, metadata=meta), torch.tensor([0.0, 1.0]))
    assert nothing.last_reasons[0] == ["expected dog>=1, found 0"]


def test_geneval_counting_with_nms_off_and_max_objects(all_detected):
    images = random_images(1, seed=6)
    # 32x32 input, 8x8 patches -> 16 boxes, all above threshold; no NMS -> 16 dogs.
    # "two dogs": include >=2 passes, exclude <3 fails -> partial 1/2, strict 0.
    partial = GenEvalReward(GenEvalReward.Config(checkpoint=all_detected, nms_iou=1.0, mode="partial"))
    assert partial(images, ["a photo of two dogs"]).item() == 0.5
    # With at most 2 detections kept per class (GenEval's MAX_OBJECTS cap) both checks pass.
    capped = GenEvalReward(GenEvalReward.Config(checkpoint=all_detected, nms_iou=1.0, max_objects=2))
    assert capped(images, ["a photo of two dogs"]).item() == 1.0


def test_geneval_postprocessing_hand_made_scores(owlv2_dir):
    reward = GenEvalReward(GenEvalReward.Config(checkpoint=owlv2_dir, colors=["red", "blue"], nms_iou=0.5))
    texts = ["a photo of a dog", "a photo of a cat", "a photo of a red dog", "a photo of a blue dog"]
    row = {t: i for i, t in enumerate(texts)}
    boxes = torch.tensor([[0.0, 0.0, 0.4, 0.4], [0.01, 0.0, 0.41, 0.4], [0.6, 0.6, 1.0, 1.0], [0.5, 0.0, 0.9, 0.3]])
    scores = torch.tensor([  # dog, cat, red dog, blue dog
        [0.90, 0.10, 0.2, 0.7],   # dog, blue
        [0.80, 0.05, 0.9, 0.1],   # dog, overlaps box 0 (IoU 0.95) -> suppressed
        [0.30, 0.60, 0.9, 0.1],   # cat wins the class argmax
        [0.05, 0.02, 0.9, 0.1],   # below threshold 0.1
    ])
    objs = reward._objects(scores, boxes, ["dog", "cat"], {"dog"}, [0, 1], row, threshold=0.1)
    assert [(d.box, d.score, d.color) for d in objs["dog"]] == [
        (pytest.approx((0.0, 0.0, 0.4, 0.4)), pytest.approx(0.9), "blue")]
    assert [(d.score, d.color) for d in objs["cat"]] == [(pytest.approx(0.6), None)]


def test_geneval_metadata_sources_and_errors(owlv2_dir):
    reward = GenEvalReward(GenEvalReward.Config(checkpoint=owlv2_dir, parse_prompts=False))
    cond = {"prompt": "whatever", "tag": "single_object", "include": [{"class": "dog", "count": 1}], "exclude": []}
    out = reward(random_images(2), [cond, "a photo of a dog"])
    assert torch.isfinite(out[0]) and torch.isnan(out[1])  # no parsing: the plain prompt has no requirements
    with pytest.raises(ValueError, match="1 entries for 2 samples"):
        reward(random_images(2), PROMPTS[:2], metadata=[None])
    with pytest.raises(ValueError, match="'include' list"):
        reward(random_images(1), PROMPTS[:1], metadata=[{"tag": "x"}])
    with pytest.raises(ValueError, match="threshold"):
        GenEvalReward.Config(threshold=1.5)
