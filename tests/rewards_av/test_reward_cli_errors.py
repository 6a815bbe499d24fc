"""`mmgrpo reward` failures (issue 11): one line naming the file, exit code 2 for bad input and 1 for a failed
run, a traceback only with --debug."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mmgrpo.reward import RewardError
from mmgrpo.rewards.cli import score_main

ACCURACY = "mmgrpo.rewards.text.accuracy:AnswerAccuracy"
JPEG = "mmgrpo.rewards.image.jpeg:JpegCompressibility"


def run(argv: list[str], capsys) -> tuple[int, str]:
    rc = score_main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return rc, err


def test_empty_text_file_is_bad_input_naming_the_file(tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("")
    rc, err = run([ACCURACY, "--text", str(tmp_path / "empty.txt")], capsys)
    assert rc == 2 and f"--text file '{tmp_path / 'empty.txt'}' is empty" in err
    (tmp_path / "blank.txt").write_text("\n  \n")
    (tmp_path / "c.txt").write_text("a\n")
    rc, err = run([ACCURACY, "--text", str(tmp_path / "c.txt"), "--prompts", str(tmp_path / "blank.txt")], capsys)
    assert rc == 2 and "--prompts file" in err and "blank.txt' is empty" in err


def test_non_utf8_text_file_names_the_file(tmp_path, capsys):
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    rc, err = run([ACCURACY, "--text", str(tmp_path / "latin1.txt")], capsys)
    assert rc == 2 and "latin1.txt' is not UTF-8 text (byte 3: invalid continuation byte)" in err
    (tmp_path / "c.txt").write_text("a\n")
    rc, err = run([ACCURACY, "--text", str(tmp_path / "c.txt"), "--prompts", str(tmp_path / "latin1.txt")], capsys)
    assert rc == 2 and "--prompts file" in err and "is not UTF-8" in err


def test_truncated_png_names_the_file(tmp_path, capsys):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "a_good.png")
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "b_cut.png")
    data = (tmp_path / "b_cut.png").read_bytes()
    (tmp_path / "b_cut.png").write_bytes(data[: len(data) // 2])
    rc, err = run([JPEG, "--images", str(tmp_path)], capsys)
    assert rc == 2 and f"--images: cannot read '{tmp_path / 'b_cut.png'}'" in err and "truncated" in err


def test_a_failing_reward_is_exit_code_1_and_debug_shows_the_traceback(tmp_path, capsys):
    (tmp_path / "c.txt").write_text("1\n")
    (tmp_path / "p.jsonl").write_text('{"answer": "1", "problem_type": "essay"}\n')
    argv = [ACCURACY, "--text", str(tmp_path / "c.txt"), "--prompts", str(tmp_path / "p.jsonl")]
    rc, err = run(argv, capsys)
    assert rc == 1 and err.startswith("mmgrpo reward: scoring failed: reward 'answer_accuracy' raised") \
        and "problem_type" in err
    with pytest.raises(RewardError, match="problem_type"):
        score_main([*argv, "--debug"])


def test_the_mmgrpo_command_prints_one_line_and_no_traceback(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    proc = subprocess.run([sys.executable, "-m", "mmgrpo.cli", "reward", "answer_accuracy", "--text",
                           str(tmp_path / "empty.txt")], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"mmgrpo reward: --text file '{tmp_path / 'empty.txt'}' is empty; give one entry per line"]
