"""The shapes world's tiny SD3: tokenizer files, pretraining pieces (hand-computed), and the shipped base model."""

from __future__ import annotations

import json

import pytest
import torch

from mmgrpo.pipelines.shapes import (
    IMAGE_SIZE,
    MAX_SEQUENCE_LENGTH,
    base_model_path,
    load_pipeline,
    sampling_kwargs,
)
from mmgrpo.pipelines.shapes.model import ModelSize, build_pipeline
from mmgrpo.pipelines.shapes.pretrain import EMA, flow_matching_loss, sample_sigmas
from mmgrpo.pipelines.shapes.tokenizer import (
    BOS,
    EOS,
    MODEL_MAX_LENGTH,
    build_vocab,
    learn_merges,
    load_tokenizer,
    write_tokenizer_files,
)
from mmgrpo.rewards.image.shapes import vocabulary_words

TINY = ModelSize(vae_channels=(8, 8), text_width=16, text_layers=2, text_projection=8, heads=2, head_dim=8, layers=1)


def test_learn_merges_hand_example():
    # words "ab", "abc": pairs (a,b) x2, (b,c</w>) x1, (a,b</w>) x1 -> first merge (a,b) [most frequent];
    # then "abc" = [ab, c</w>] and "ab" = [a, b</w>]: pairs (ab,c</w>) and (a,b</w>) tie at 1, the
    # alphabetically smaller ("a" < "ab") goes first.
    assert learn_merges(["ab", "abc"])[:2] == [("a", "b"), ("a", "b</w>")]
    assert learn_merges(["ab", "abc"]) == [("a", "b"), ("a", "b</w>"), ("ab", "c</w>")]


def test_every_word_is_one_token(tmp_path):
    write_tokenizer_files(tmp_path)
    tok = load_tokenizer(tmp_path)
    vocab, _ = build_vocab(vocabulary_words())
    assert len(tok) == len(vocab)
    for w in vocabulary_words():
        assert tok.convert_ids_to_tokens(tok(w).input_ids) == [BOS, w + "</w>", EOS]
    ids = tok("a blue square to the left of a yellow triangle", padding="max_length",
              max_length=MODEL_MAX_LENGTH).input_ids
    assert len(ids) == MODEL_MAX_LENGTH and ids[0] == tok.bos_token_id and ids[11] == tok.eos_token_id
    # Other text still tokenizes, into byte pieces.
    assert tok.convert_ids_to_tokens(tok("zebra").input_ids) == [BOS, "z", "e", "b", "r", "a</w>", EOS]


def test_sigma_shift_hand_values():
    # u = sigmoid(0) = 0.5 for a zero draw; shift 3: 3 * 0.5 / (1 + 2 * 0.5) = 0.75; shift 1: 0.5
    gen = torch.Generator().manual_seed(0)
    n = torch.randn(4, generator=torch.Generator().manual_seed(0))
    u = torch.sigmoid(n)
    assert sample_sigmas(4, 3.0, gen).tolist() == pytest.approx((3 * u / (1 + 2 * u)).tolist())
    assert sample_sigmas(4, 1.0, torch.Generator().manual_seed(0)).tolist() == pytest.approx(u.tolist())
    # the closed form at u = 0.5
    assert 3 * 0.5 / (1 + 2 * 0.5) == 0.75


def test_ema_hand_values():
    m = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(m.weight)
    ema = EMA({"m": m}, decay=0.99)
    with torch.no_grad():
        m.weight.fill_(1.0)
    ema.update()  # k = 0: d = min(0.99, 1/10) = 0.1 -> 0 + 0.9 * (1 - 0) = 0.9
    assert ema.shadow["m"].weight.item() == pytest.approx(0.9)
    ema.update()  # k = 1: d = min(0.99, 2/11) -> 0.9 + (9/11) * (1 - 0.9)
    assert ema.shadow["m"].weight.item() == pytest.approx(0.9 + 9 / 11 * 0.1)


def test_flow_matching_loss_follows_the_sd3_convention(tmp_path):
    pipe = build_pipeline(TINY, tmp_path / "tok")
    x0 = torch.randn(3, TINY.latent_channels, 16, 16, generator=torch.Generator().manual_seed(1))
    prompts = ["a red circle", "", "two blue squares"]
    loss = flow_matching_loss(pipe, x0, prompts, 3.0, torch.Generator().manual_seed(5))
    # Recompute by hand with the same draws: noise first, then the noise levels.
    gen = torch.Generator().manual_seed(5)
    noise = torch.randn(x0.shape, generator=gen)
    u = torch.sigmoid(torch.randn(3, generator=gen))
    s = 3.0 * u / (1 + 2.0 * u)
    x_t = (1 - s.view(3, 1, 1, 1)) * x0 + s.view(3, 1, 1, 1) * noise
    emb, _, pooled, _ = pipe.encode_prompt(prompts, None, None, do_classifier_free_guidance=False,
                                           max_sequence_length=MAX_SEQUENCE_LENGTH)
    # conditioning: two CLIP hidden states side by side (16 tokens) plus MAX_SEQUENCE_LENGTH zero "T5" tokens
    assert emb.shape == (3, MODEL_MAX_LENGTH + MAX_SEQUENCE_LENGTH, 2 * TINY.text_width)
    v = pipe.transformer(hidden_states=x_t, timestep=1000 * s, encoder_hidden_states=emb,
                         pooled_projections=pooled).sample
    assert loss.item() == pytest.approx(((v - (noise - x0)) ** 2).mean().item(), rel=1e-5)
    loss.backward()  # the text encoders are trained too
    assert pipe.text_encoder.text_model.embeddings.token_embedding.weight.grad is not None


def test_pretrain_script_runs_end_to_end(tmp_path):
    """The real script for a handful of steps at a tiny size; its checkpoint loads and samples."""
    from mmgrpo.pipelines.shapes.pretrain import main

    out = tmp_path / "run"
    assert main(["--out", str(out), "--images", "32", "--vae-steps", "2", "--vae-batch", "4", "--steps", "2",
                 "--batch", "4", "--eval-images", "2", "--layers", "1", "--heads", "2", "--head-dim", "8",
                 "--threads", "1"]) == 0
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in log][-2:] == ["checkpoint", "done"]
    assert (out / "final" / "tokenizer" / "vocab.json").is_file()
    pipe = load_pipeline(out / "final")
    assert pipe.vae.config.scaling_factor == pytest.approx(log[[r["stage"] for r in log].index("latents")]
                                                          ["scaling_factor"])
    # The second stage of the recipe: reuse the VAE, continue the transformer from the first run.
    more = tmp_path / "more"
    assert main(["--out", str(more), "--images", "32", "--vae-from", str(out / "final" / "vae"), "--init-from",
                 str(out / "final"), "--steps", "1", "--batch", "4", "--eval-images", "2", "--layers", "1",
                 "--heads", "2", "--head-dim", "8", "--threads", "1"]) == 0
    stages = [json.loads(line)["stage"] for line in (more / "log.jsonl").read_text().splitlines()]
    assert "init" in stages and stages[-1] == "done"


def test_tokenizer_script_writes_loadable_files(tmp_path, capsys):
    import runpy

    from mmgrpo.pipelines.shapes import HERE

    script = runpy.run_path(str(HERE.parents[1] / "scripts" / "shapes_make_tokenizer.py"))
    assert script["main"](["--out", str(tmp_path / "a")]) == 0
    assert "every one of" in capsys.readouterr().out
    assert load_tokenizer(tmp_path / "a")("four green squares").input_ids[1:4] == [
        build_vocab(vocabulary_words())[0][w + "</w>"] for w in ("four", "green", "squares")]


# ------------------------------------------------------------------ the shipped base model


def test_shipped_base_model_loads_and_samples():
    from diffusers import StableDiffusion3Pipeline

    path = base_model_path()
    pipe = StableDiffusion3Pipeline.from_pretrained(path, text_encoder_3=None, tokenizer_3=None)
    assert pipe.text_encoder_3 is None and pipe.vae_scale_factor == 2
    size = sum(f.stat().st_size for f in path.rglob("*.safetensors"))
    assert size < 10 * 2**20, f"shipped weights are {size / 2**20:.1f} MB; keep them a few MB"
    kwargs = {**sampling_kwargs(), "num_inference_steps": 2}
    gens = [torch.Generator().manual_seed(s) for s in (0, 1)]
    images = pipe(["two red circles", "a blue square left of a yellow triangle"], generator=gens,
                  output_type="pt", **kwargs).images
    assert images.shape == (2, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert images.min() >= 0 and images.max() <= 1
    # the shipped tokenizers are the generated vocabulary
    vocab, merges = build_vocab(vocabulary_words())
    assert json.loads((path / "tokenizer" / "vocab.json").read_text()) == vocab
    assert pipe.tokenizer("two red circles").input_ids == [vocab[BOS], vocab["two</w>"], vocab["red</w>"],
                                                           vocab["circles</w>"], vocab[EOS]]


def test_load_pipeline_is_the_base_model():
    pipe = load_pipeline()
    assert type(pipe).__name__ == "StableDiffusion3Pipeline"
    assert pipe.transformer.config.sample_size * pipe.vae_scale_factor == IMAGE_SIZE
