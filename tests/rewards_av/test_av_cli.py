"""`mmgrpo reward` (score_main) on text, audio and image files, and `--param` parsing."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from mmgrpo.rewards.cli import build_reward, parse_params, score_main
from mmgrpo.rewards.payload import wav_bytes

from .conftest import noise


def test_parse_params_yaml_values():
    assert parse_params(["rel_tol=0.5", "extract=false", "mode=exact", "ids=[1, 2]", "empty="]) == {
        "rel_tol": 0.5, "extract": False, "mode": "exact", "ids": [1, 2], "empty": ""}
    with pytest.raises(ValueError, match="key=value"):
        parse_params(["oops"])


def test_build_reward_validates_params_against_config():
    reward = build_reward("mmgrpo.rewards.text.length:LengthReward", {"target": 3, "unit": "chars"})
    assert reward.cfg.target == 3 and reward.cfg.unit == "chars"
    with pytest.raises(ValueError, match="unit"):
        build_reward("mmgrpo.rewards.text.length:LengthReward", {"unit": "pages"})
    with pytest.raises(ValueError, match="allowed module prefixes"):
        build_reward("os:system", {})


def test_score_text_file_prints_a_table(tmp_path, capsys):
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(x) for x in
                                                ["<answer>4</answer>", {"completion": "<answer>B</answer>"}, "x"]))
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(x) for x in
                                                [{"prompt": "2+2", "answer": "4"}, {"answer": "C"}, "no truth"]))
    rc = score_main(["mmgrpo.rewards.text.accuracy:AnswerAccuracy", "--text", str(tmp_path / "c.jsonl"),
                     "--prompts", str(tmp_path / "p.jsonl")])
    out = capsys.readouterr().out.splitlines()
    assert rc == 0
    assert out[1].split()[-1] == "1.0000" and out[2].split()[-1] == "0.0000" and out[3].split()[-1] == "n/a"
    assert out[-1].startswith("mean 0.5000 over 2 of 3 scored")
    rc = score_main(["mmgrpo.rewards.text.length:LengthReward", "--text", str(tmp_path / "c.jsonl"),
                     "--param", "unit=chars", "--param", "target=18", "--json"])
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    # "<answer>4</answer>" has 18 chars -> 1.0; "x" has 1 -> 1 - 17/18
    assert rc == 0 and rows[0]["score"] == 1.0 and rows[2]["score"] == pytest.approx(1 / 18)


def test_score_audio_folder_uses_the_files_sample_rate(tmp_path, capsys, tiny_wavlm):
    ref = noise(8000, 3)
    (tmp_path / "a.wav").write_bytes(wav_bytes(ref, 16000))
    (tmp_path / "b.wav").write_bytes(wav_bytes(torch.zeros(8000), 16000))
    np.save(tmp_path / "ignored.npy", np.zeros(3))
    rc = score_main(["mmgrpo.rewards.audio.speaker:WavLMSpeakerSimilarity", "--audio", str(tmp_path),
                     "--param", f"checkpoint={tiny_wavlm}", "--json"])
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    # no reference audio in the (empty) prompts: every sample is not applicable -> null
    assert rc == 0 and [r["item"] for r in rows] == ["a.wav", "b.wav"] and all(r["score"] is None for r in rows)


def test_score_image_folder(tmp_path, capsys):
    flat = np.full((16, 16, 3), 128, np.uint8)
    busy = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(flat).save(tmp_path / "1_flat.png")
    Image.fromarray(busy).save(tmp_path / "2_busy.png")
    rc = score_main(["mmgrpo.rewards.image.jpeg:JpegCompressibility", "--images", str(tmp_path), "--json"])
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert rc == 0 and rows[0]["score"] > rows[1]["score"]           # the flat image compresses better


def test_score_errors_are_reported_with_exit_code_2(tmp_path, capsys):
    (tmp_path / "c.txt").write_text("a\nb\n")
    (tmp_path / "p.txt").write_text("x\ny\nz\n")
    rc = score_main(["mmgrpo.rewards.text.format:ThinkAnswerFormat", "--text", str(tmp_path / "c.txt"),
                     "--prompts", str(tmp_path / "p.txt")])
    assert rc == 2 and "--prompts has 3 entries for 2 outputs" in capsys.readouterr().err
    assert score_main(["mmgrpo.rewards.text.format:ThinkAnswerFormat", "--images", str(tmp_path)]) == 2
    assert "no .png" in capsys.readouterr().err
