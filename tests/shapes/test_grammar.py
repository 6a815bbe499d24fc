"""The shapes prompt language: parsing, formatting, errors, and the fixed train / held-out split."""

from __future__ import annotations

import pytest

from mmgrpo.pipelines.shapes import load_prompts, prompts_path
from mmgrpo.pipelines.shapes.grammar import (
    HELD_OUT_FRACTION,
    all_prompts,
    category,
    combination_key,
    held_out_keys,
    split_prompts,
    write_prompt_files,
)
from mmgrpo.rewards.image.shapes import (
    COLORS,
    RELATIONS,
    SHAPES,
    Phrase,
    PromptError,
    ShapesPrompt,
    format_prompt,
    parse_prompt,
    vocabulary_words,
)


def test_parse_examples():
    assert parse_prompt("two red circles") == ShapesPrompt((Phrase(2, "red", "circle"),))
    assert parse_prompt("A blue square left of a yellow triangle.") == ShapesPrompt(
        (Phrase(1, "blue", "square"), Phrase(1, "yellow", "triangle")), "left of")
    # "to the right of" is another way to write "right of"
    assert parse_prompt("a red circle to the right of a green square").relation == "right of"
    p = parse_prompt("one green triangle and four blue squares")
    assert p.phrases == (Phrase(1, "green", "triangle"), Phrase(4, "blue", "square"))
    assert p.category == "composition"
    assert p.expected() == [("green", "triangle")] + [("blue", "square")] * 4


def test_enumeration_sizes_and_roundtrip():
    prompts = all_prompts()
    # counting 4 counts x 12 objects; composition 12 x 11 ordered pairs; position 4 relations x 132
    assert len(prompts) == 48 + 132 + 4 * 132
    texts = [format_prompt(p) for p in prompts]
    assert len(set(texts)) == len(texts)
    for p, t in zip(prompts, texts):
        assert parse_prompt(t) == p
    words = set(vocabulary_words())
    assert all(w in words for t in texts for w in t.split())


@pytest.mark.parametrize("text, where", [
    ("five red circles", "a count"),
    ("a purple circle", "a color"),
    ("two red circle", "plural shape"),
    ("a red circles", "singular shape"),
    ("a red circle near a blue square", "the end of the prompt"),
    ("a red circle and", "a count"),
    ("", "a count"),
])
def test_parse_errors_say_what_was_expected(text, where):
    with pytest.raises(PromptError, match=where):
        parse_prompt(text)


def test_relation_needs_single_objects():
    with pytest.raises(PromptError, match="joins single objects"):
        parse_prompt("two red circles left of a blue square")


def test_combination_keys_identify_equivalent_phrasings():
    a = parse_prompt("a red circle left of a blue square")
    b = parse_prompt("a blue square right of a red circle")
    c = parse_prompt("a blue square left of a red circle")
    assert combination_key(a) == combination_key(b) != combination_key(c)
    assert combination_key(parse_prompt("a red circle and a blue square")) == combination_key(
        parse_prompt("a blue square and a red circle"))


def test_split_is_disjoint_by_combination_and_covers_every_word():
    split = split_prompts()
    train, held = split["train"], split["eval"]
    assert not set(train) & set(held)
    train_keys = {combination_key(parse_prompt(t)) for t in train}
    eval_keys = {combination_key(parse_prompt(t)) for t in held}
    assert not train_keys & eval_keys  # no held-out scene is reachable by rephrasing a training one
    assert eval_keys == held_out_keys()
    assert len(train) + len(held) == len(all_prompts())
    for cat, n_keys in (("counting", 48), ("composition", 66), ("position", 264)):
        n_held = sum(1 for k in eval_keys if (k[0] == cat))
        assert n_held == round(HELD_OUT_FRACTION * n_keys)
    # Every count, color, shape and relation still occurs in training, in every category it can.
    parsed = [parse_prompt(t) for t in train]
    counting = [p.phrases[0] for p in parsed if p.category == "counting"]
    assert {p.count for p in counting} == {1, 2, 3, 4}
    assert {p.color for p in counting} == set(COLORS) and {p.shape for p in counting} == set(SHAPES)
    assert {p.relation for p in parsed if p.relation} == set(RELATIONS)
    objs = {(ph.color, ph.shape) for p in parsed if p.category == "position" for ph in p.phrases}
    assert len(objs) == 12


def test_shipped_prompt_files_are_what_the_generator_writes(tmp_path):
    paths = write_prompt_files(tmp_path)
    for split in ("train", "eval"):
        assert paths[split].read_text() == prompts_path(split).read_text(), (
            f"{prompts_path(split)} is stale; regenerate with `python -m mmgrpo.pipelines.shapes.grammar`")
        assert load_prompts(split) == split_prompts()[split]
        demo = load_prompts(f"demo_{split}")
        assert paths[f"demo_{split}"].read_text() == prompts_path(f"demo_{split}").read_text()
        assert demo == [t for t in split_prompts()[split] if category(t) in ("counting", "composition")]
    with pytest.raises(ValueError, match="'train' or 'eval'"):
        prompts_path("test")
