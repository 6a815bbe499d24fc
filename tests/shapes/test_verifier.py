"""The shapes verifier: hand-computed features and scores, loop references, renderer agreement, bad inputs."""

from __future__ import annotations

import colorsys
import random
from collections import deque

import numpy as np
import pytest
import torch

from mmgrpo.pipelines.shapes.grammar import all_prompts
from mmgrpo.pipelines.shapes.render import PlacedObject, draw, render_batch, to_tensor
from mmgrpo.reward import call_reward
from mmgrpo.rewards.image.shapes import (
    COLORS,
    Detection,
    ShapesReward,
    classify_shape,
    color_labels,
    detect_objects,
    format_prompt,
    hue_saturation_value,
    label_components,
    parse_prompt,
    relation_holds,
    score_detections,
    shape_features,
    verify,
)


def image(*objects: tuple[str, str, float, float, float]) -> torch.Tensor:
    """One rendered image [1,3,32,32] of objects given as (color, shape, x0, y0, side)."""
    return to_tensor([draw([PlacedObject(*o) for o in objects])])


def one(prompt: str, img: torch.Tensor):
    return verify(img, [prompt])[0]


# ------------------------------------------------------------------ pixels and components


def test_hsv_hand_values_and_colorsys_reference():
    px = torch.tensor([[1.0, 0.0, 0.0], [0.5, 1.0, 0.5], [0.2, 0.2, 0.8], [1.0, 1.0, 1.0]])  # [4,3]
    hue, sat, val = hue_saturation_value(px.T.reshape(1, 3, 1, 4))
    # red: hue 0, sat 1; (0.5,1,0.5): green hue 120, sat (1-0.5)/1 = 0.5; (0.2,0.2,0.8): blue hue 240,
    # sat 0.6/0.8 = 0.75; white: sat 0 (hue defined as 0)
    assert hue.flatten().tolist() == pytest.approx([0.0, 120.0, 240.0, 0.0])
    assert sat.flatten().tolist() == pytest.approx([1.0, 0.5, 0.75, 0.0])
    assert val.flatten().tolist() == pytest.approx([1.0, 1.0, 0.8, 1.0])
    rgb = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    hue, sat, val = hue_saturation_value(rgb)
    for y in range(8):
        for x in range(8):
            h, s, v = colorsys.rgb_to_hsv(*rgb[0, :, y, x].tolist())
            assert hue[0, y, x].item() == pytest.approx(360 * h, abs=1e-3)
            assert sat[0, y, x].item() == pytest.approx(s, abs=1e-5)
            assert val[0, y, x].item() == pytest.approx(v, abs=1e-6)


def test_color_labels_follow_coverage_and_hue():
    red = torch.tensor(COLORS["red"]) / 255.0
    white = torch.ones(3)
    # coverage alpha: 0.6 red over white is 0.6 of the way to red -> red (0); 0.4 -> background (-1);
    # orange (1, 0.5, 0) has hue 30: 30 from red (0), 24 from yellow (54) -> -1; gray -> -1
    px = torch.stack([0.6 * red + 0.4 * white, 0.4 * red + 0.6 * white, torch.tensor([1.0, 0.5, 0.0]),
                      torch.tensor([0.5, 0.5, 0.5])] + [torch.tensor(c) / 255.0 for c in COLORS.values()])
    labels = color_labels(px.T.reshape(1, 3, 1, -1)).flatten().tolist()
    assert labels == [0, -1, -1, -1, 0, 1, 2, 3]


def bfs_components(mask: np.ndarray) -> np.ndarray:
    """Loop reference: 8-connected components by breadth-first search, labels 1, 2, ... in scan order."""
    h, w = mask.shape
    out = np.zeros((h, w), dtype=np.int64)
    n = 0
    for y in range(h):
        for x in range(w):
            if mask[y, x] and not out[y, x]:
                n += 1
                out[y, x] = n
                queue = deque([(y, x)])
                while queue:
                    cy, cx = queue.popleft()
                    for dy in (-1, 0, 1):
                        for dx in (-1, 0, 1):
                            ny, nx = cy + dy, cx + dx
                            if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not out[ny, nx]:
                                out[ny, nx] = n
                                queue.append((ny, nx))
    return out


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Two labelings split the pixels the same way (labels may differ)."""
    pairs = set(zip(a.flatten().tolist(), b.flatten().tolist()))
    return len(pairs) == len({p[0] for p in pairs}) == len({p[1] for p in pairs})


def test_label_components_matches_bfs_reference():
    gen = torch.Generator().manual_seed(0)
    masks = torch.rand(6, 12, 15, generator=gen) < torch.tensor([0.2, 0.35, 0.5, 0.6, 0.0, 1.0]).view(6, 1, 1)
    labels = label_components(masks)  # [6,12,15]
    for i in range(6):
        ref = bfs_components(masks[i].numpy())
        assert same_partition(labels[i].numpy(), ref)
        assert ((labels[i] > 0) == masks[i]).all()
    # diagonal neighbours join (8-connectivity); a gap of one pixel separates
    m = torch.tensor([[1, 0, 0, 1], [0, 1, 0, 1], [0, 0, 0, 1]], dtype=torch.bool)[None]
    assert len(torch.unique(label_components(m))) == 3  # background + 2 components


def test_shape_features_hand_computed():
    # A 3x3 "roof": area 7, fill 7/9; odd height: top = row 0 (1 px) + half of row 1 (3 px) = 2.5,
    # 2.5 / 7 = 0.357; corners (0,0)=0 (0,2)=0 (2,0)=1 (2,2)=1 -> 0.5; aspect 1
    roof = torch.tensor([[0, 1, 0], [1, 1, 1], [1, 1, 1]], dtype=torch.bool)
    assert shape_features(roof) == pytest.approx((7 / 9, 2.5 / 7, 0.5, 1.0))
    # A 10x10 block missing 3 pixels of its top-left 2x2 corner: area 97, fill 0.97; even height:
    # top = rows 0-4 = 50 - 3 = 47 -> 47/97; corner blocks k = round(10/5) = 2: (1 + 4 + 4 + 4) / 16
    notched = torch.ones(10, 10, dtype=torch.bool)
    notched[0, 0] = notched[0, 1] = notched[1, 0] = False
    assert shape_features(notched) == pytest.approx((0.97, 47 / 97, 13 / 16, 1.0))
    assert classify_shape(notched) == "square"
    # A 2x6 bar: fill 1, top 1/2, corners 1, aspect 3 -> too long to be a shape
    bar = torch.ones(2, 6, dtype=torch.bool)
    assert shape_features(bar) == pytest.approx((1.0, 0.5, 1.0, 3.0))
    assert classify_shape(bar) is None
    assert classify_shape(torch.ones(8, 8, dtype=torch.bool)) == "square"
    yy, xx = torch.meshgrid(torch.arange(10) + 0.5, torch.arange(10) + 0.5, indexing="ij")
    disc = (yy - 5) ** 2 + (xx - 5) ** 2 <= 25  # fill 0.8, top 0.5, no corners
    assert classify_shape(disc) == "circle"
    tri = (xx - 5).abs() <= yy / 2  # apex-up triangle, base = height = 10
    assert classify_shape(tri) == "triangle"


def test_relation_rule():
    a = Detection("red", "circle", 5.0, 10.0, 50)
    b = Detection("blue", "square", 20.0, 14.0, 50)  # dx = 15, dy = 4: horizontal dominates
    assert relation_holds("left of", a, b) and relation_holds("right of", b, a)
    assert not relation_holds("above", a, b) and not relation_holds("below", b, a)
    c = Detection("blue", "square", 10.0, 16.0, 50)  # dx = 5, dy = 6: vertical dominates
    assert relation_holds("above", a, c) and not relation_holds("left of", a, c)


# ------------------------------------------------------------------ scores on hand-made images


def test_correct_render_scores_one_and_detects_objects():
    img = image(("red", "circle", 2, 3, 10), ("blue", "square", 19, 5, 9))
    dets = detect_objects(img)[0]
    assert sorted((d.color, d.shape) for d in dets) == [("blue", "square"), ("red", "circle")]
    v = one("a red circle left of a blue square", img)
    assert (v.strict, v.partial, v.relation_ok, v.count_ok, v.colors_ok, v.shapes_ok) == (1, 1, True, True, True, True)


@pytest.mark.parametrize("prompt, objects, partial", [
    # wrong count: 2 of 3 expected circles matched, max(3, 2) = 3 items -> 2/3
    ("three red circles", [("red", "circle", 2, 2, 9), ("red", "circle", 20, 20, 9)], 2 / 3),
    # too many: 2 matched, but max(2, 3) = 3 -> 2/3
    ("two red circles", [("red", "circle", 2, 2, 9), ("red", "circle", 20, 20, 9), ("red", "circle", 2, 20, 9)], 2 / 3),
    # wrong color: same shape only, sim 0.5, one item -> 1/2
    ("a red circle", [("blue", "circle", 10, 10, 10)], 0.5),
    # wrong shape: same color only -> 1/2
    ("a red circle", [("red", "square", 10, 10, 10)], 0.5),
    # nothing drawn: 0 / 1
    ("a red circle", [], 0.0),
    # two red squares for "two red circles": sims 0.5 + 0.5 over 2 -> 1/2
    ("two red circles", [("red", "square", 2, 2, 9), ("red", "square", 20, 20, 9)], 0.5),
    # wrong position: both objects right (1 + 1) but relation fails, 3 items -> 2/3
    ("a red circle left of a blue square", [("red", "circle", 20, 10, 9), ("blue", "square", 2, 10, 9)], 2 / 3),
    # right position, wrong shape of B: 1 + 0.5 + relation 1 over 3 -> 5/6
    ("a red circle left of a blue square", [("red", "circle", 2, 10, 9), ("blue", "triangle", 20, 10, 9)], 5 / 6),
    # vertical placement for "left of": objects right, relation fails -> 2/3
    ("a red circle left of a blue square", [("red", "circle", 10, 2, 9), ("blue", "square", 12, 20, 9)], 2 / 3),
    # an extra green triangle in a composition: 1 + 1 over max(2, 3) = 3 -> 2/3
    ("a red circle and a blue square",
     [("red", "circle", 2, 2, 9), ("blue", "square", 20, 2, 9), ("green", "triangle", 10, 20, 9)], 2 / 3),
    # only one of two objects: 1 over 2 -> 1/2
    ("a red circle and a blue square", [("red", "circle", 2, 2, 9)], 0.5),
    # relation with one object missing: 1 + 0 + relation 0 over 3 -> 1/3
    ("a red circle above a blue square", [("red", "circle", 2, 2, 9)], 1 / 3),
])
def test_strict_and_partial_on_hand_made_cases(prompt, objects, partial):
    v = one(prompt, image(*objects))
    assert v.strict == 0.0
    assert v.partial == pytest.approx(partial)


def test_score_detections_picks_the_best_matching_for_the_relation():
    # Two blue squares: only the one right of the circle makes the relation true. 2 expected objects,
    # 3 detections: sims 1 + 1, relation 1 over max(2, 3) + 1 = 4 -> 3/4 (not 2/4 from the wrong square).
    p = parse_prompt("a red circle left of a blue square")
    dets = [Detection("blue", "square", 2.0, 10.0, 80), Detection("red", "circle", 12.0, 10.0, 80),
            Detection("blue", "square", 25.0, 10.0, 80)]
    v = score_detections(p, dets)
    assert v.partial == pytest.approx(3 / 4) and v.relation_ok is True and not v.count_ok


def test_renderer_and_verifier_agree_on_random_prompts():
    texts = [format_prompt(p) for p in all_prompts()]
    rng = random.Random(7)
    prompts = [rng.choice(texts) for _ in range(300)]
    verdicts = verify(render_batch(prompts, list(range(300))), prompts)
    agree = sum(v.strict for v in verdicts) / len(verdicts)
    assert agree == 1.0, [p for p, v in zip(prompts, verdicts) if v.strict != 1][:5]


def test_blurred_renders_still_verify():
    """A 3x3 box blur (softer than any shape edge the renderer draws) keeps every verdict."""
    texts = [format_prompt(p) for p in all_prompts()]
    rng = random.Random(8)
    prompts = [rng.choice(texts) for _ in range(100)]
    images = render_batch(prompts, list(range(100)))
    blurred = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(images, (1, 1, 1, 1), mode="replicate"), 3, 1)
    assert [v.strict for v in verify(blurred, prompts)] == [1.0] * 100


def test_corrupted_renders_fail():
    prompts = ["two red circles", "a blue square left of a yellow triangle", "a green triangle and a red square",
               "four yellow squares"]
    images = render_batch(prompts, [1, 2, 3, 4])
    # wrong count / mirrored relation / wrong color / wrong shape (the images above, other prompts)
    wrong = ["three red circles", "a blue square right of a yellow triangle", "a green triangle and a blue square",
             "four yellow circles"]
    verdicts = verify(images, wrong)
    assert [v.strict for v in verdicts] == [0, 0, 0, 0]
    # 2/3 (count), 2/3 (relation), (1 + 0.5) / 2 (color), 4 * 0.5 / 4 (shape)
    assert [v.partial for v in verdicts] == pytest.approx([2 / 3, 2 / 3, 0.75, 0.5])
    # a flipped image breaks the relation but keeps objects; blurring away colour removes objects
    flipped = verify(images[1:2].flip(-1), prompts[1:2])[0]
    assert flipped.partial == pytest.approx(2 / 3) and flipped.relation_ok is False
    gray = images.mean(1, keepdim=True).expand(-1, 3, -1, -1)
    assert all(v.partial == 0 for v in verify(gray, prompts))


# ------------------------------------------------------------------ the Reward


def test_reward_modes_and_protocol():
    prompts = ["two red circles", "three red circles"]
    images = render_batch(["two red circles", "two red circles"], [0, 1])
    strict = ShapesReward(ShapesReward.Config(mode="strict"))
    partial = ShapesReward(ShapesReward.Config(mode="partial"))
    assert strict.name == "shapes"
    out = call_reward(strict, images, prompts, group_ids=torch.tensor([0, 1]))
    assert out.dtype == torch.float32 and out.tolist() == [1.0, 0.0]
    assert partial(images, prompts).tolist() == pytest.approx([1.0, 2 / 3])


def test_reward_unparseable_prompts():
    images = render_batch(["a red circle", "a red circle"], [0, 1])
    with pytest.raises(ValueError, match="expected a color"):
        ShapesReward()(images, ["a red circle", "a cat"])
    out = ShapesReward(ShapesReward.Config(unparseable="nan"))(images, ["a red circle", "a cat"])
    assert out[0] == 1.0 and torch.isnan(out[1])


def test_reward_config_is_checked():
    with pytest.raises(ValueError, match="mode: expected 'strict' or 'partial'"):
        ShapesReward(ShapesReward.Config(mode="soft"))
    with pytest.raises(ValueError, match="unparseable"):
        ShapesReward(ShapesReward.Config(unparseable="skip"))


@pytest.mark.parametrize("bad, message", [
    (torch.rand(3, 32, 32), r"shape \[N,3,H,W\]"),
    (torch.rand(2, 1, 32, 32), r"shape \[N,3,H,W\]"),
    (torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8), "float tensor"),
    (torch.rand(2, 3, 32, 32) * 2 - 1, r"values in \[0,1\].*\(x \+ 1\) / 2"),
    (torch.full((2, 3, 32, 32), float("nan")), r"values in \[0,1\]"),
    (np.zeros((2, 3, 32, 32), dtype=np.float32), "torch.Tensor"),
])
def test_bad_inputs_say_what_is_expected(bad, message):
    with pytest.raises((ValueError, TypeError), match=message):
        ShapesReward()(bad, ["a red circle", "a red circle"])


def test_prompt_count_must_match():
    with pytest.raises(ValueError, match="2 images but 1 prompts"):
        ShapesReward()(torch.ones(2, 3, 32, 32), ["a red circle"])


def test_verifier_works_at_other_resolutions():
    from mmgrpo.pipelines.shapes.render import render

    prompts = ["three green triangles", "a yellow circle below a blue square"]
    imgs = to_tensor([render(p, 3, size=64) for p in prompts])
    assert [v.strict for v in verify(imgs, prompts)] == [1.0, 1.0]
