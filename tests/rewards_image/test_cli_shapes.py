"""`mmgrpo reward shapes --images DIR --prompts FILE` on PNGs drawn by the shapes-world renderer."""

from __future__ import annotations

import json

from PIL import Image

from mmgrpo.pipelines.shapes.render import render
from mmgrpo.rewards.cli import score_main

# One prompt of each category (counting, two-object position, composition) and a plural count.
PROMPTS = ["a red circle", "two blue squares", "a green triangle left of a yellow circle",
           "a yellow square and a red triangle"]


def write_renders(folder, prompts, seeds):
    for i, (prompt, seed) in enumerate(zip(prompts, seeds)):
        Image.fromarray(render(prompt, seed)).save(folder / f"img{i:02d}.png")


def scores(capsys, argv):
    rc = score_main(argv)
    out = capsys.readouterr()
    assert rc == 0, out.err
    return [json.loads(line)["score"] for line in out.out.splitlines()]


def test_renders_score_one_strict_and_a_swapped_prompt_zero(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    write_renders(images, PROMPTS, seeds=[0, 1, 2, 3])
    (tmp_path / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    argv = ["shapes", "--images", str(images), "--prompts", str(tmp_path / "prompts.txt"), "--json"]
    assert scores(capsys, argv) == [1.0, 1.0, 1.0, 1.0]  # strict is the default mode

    # The same images against the prompts in reverse order: every image now shows the wrong objects.
    (tmp_path / "reversed.txt").write_text("\n".join(reversed(PROMPTS)) + "\n")
    argv[4] = str(tmp_path / "reversed.txt")
    assert scores(capsys, argv) == [0.0, 0.0, 0.0, 0.0]
    # Partial credit, image 0 (one red circle) vs "a yellow square and a red triangle": the best matching
    # pairs the red circle with the red triangle (color only, 0.5), the yellow square with nothing;
    # max(n_E=2, n_D=1) = 2 items -> 0.5 / 2 = 0.25.
    assert scores(capsys, argv + ["--param", "mode=partial"])[0] == 0.25


def test_table_output_and_mean(tmp_path, capsys):
    write_renders(tmp_path, PROMPTS[:2], seeds=[5, 6])
    (tmp_path / "prompts.txt").write_text("\n".join(PROMPTS[:2]) + "\n")
    rc = score_main(["shapes", "--images", str(tmp_path), "--prompts", str(tmp_path / "prompts.txt")])
    lines = capsys.readouterr().out.splitlines()
    assert rc == 0
    assert [ln.split()[1:] for ln in lines[1:3]] == [["img00.png", "1.0000"], ["img01.png", "1.0000"]]
    assert lines[-1] == "mean 1.0000 over 2 of 2 scored (shapes)"
