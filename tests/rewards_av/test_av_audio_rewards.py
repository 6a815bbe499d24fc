"""Audio rewards on tiny random Whisper / WavLM x-vector checkpoints: shapes, determinism, batch invariance,
silence, and the error-rate shaping."""

import math

import numpy as np
import pytest
import torch

from mmgrpo.rewards.audio.asr import WhisperAsr, shape_error
from mmgrpo.rewards.audio.speaker import WavLMSpeakerSimilarity
from mmgrpo.rewards.audio.waveforms import is_silent, resample, sample_rates, to_waveforms
from mmgrpo.rewards.text.metrics import word_error_rate

from .conftest import noise


def test_shape_error_hand_computed():
    assert shape_error(0.25, "linear") == pytest.approx(0.75)
    assert shape_error(1.5, "linear") == 0.0                                   # WER > 1 clipped at 0
    assert shape_error(0.25, "tanh") == pytest.approx(1 - math.tanh(0.75))     # 1 - tanh(3 * 0.25) = 0.3649
    assert shape_error(0.0, "tanh") == 1.0
    assert math.isnan(shape_error(float("nan"), "tanh"))


def test_to_waveforms_accepts_lists_and_batches():
    batch = torch.zeros(3, 1, 100)
    assert [w.shape for w in to_waveforms(batch)] == [torch.Size([100])] * 3
    mixed = to_waveforms([np.zeros(5), torch.ones(7, dtype=torch.float64), [0.1, 0.2]])
    assert [w.numel() for w in mixed] == [5, 7, 2] and all(w.dtype == torch.float32 for w in mixed)
    with pytest.raises(ValueError, match=r"outputs\[0\]: expected a mono 1-D waveform"):
        to_waveforms([torch.zeros(2, 3)])
    with pytest.raises(ValueError, match="no sample rate"):
        sample_rates({}, None, 2, "asr")
    assert sample_rates({"sample_rate": [8000, 16000]}, None, 2, "asr") == [8000, 16000]


def test_is_silent_rules():
    assert is_silent(torch.zeros(16000), 16000)                      # all zeros
    assert is_silent(torch.zeros(0), 16000)                          # empty
    assert is_silent(noise(800, 0), 16000)                           # 0.05 s < min_seconds 0.1
    assert is_silent(torch.full((16000,), float("nan")), 16000)      # non-finite
    assert is_silent(noise(16000, 0, scale=1e-6), 16000)             # peak ~5e-6 < 1e-4
    assert not is_silent(noise(16000, 0), 16000)


def test_resample_keeps_a_tone_and_changes_length():
    t = torch.arange(8000) / 8000.0
    tone = torch.sin(2 * math.pi * 440 * t)                          # 1 s of 440 Hz at 8 kHz
    up = resample(tone, 8000, 16000)
    assert up.numel() == 16000
    ref = torch.sin(2 * math.pi * 440 * torch.arange(16000) / 16000.0)
    assert torch.allclose(up[200:-200], ref[200:-200], atol=0.02)    # away from the edges


def test_whisper_asr_tiny(tiny_whisper):
    reward = WhisperAsr(WhisperAsr.Config(checkpoint=tiny_whisper, batch_size=2, max_new_tokens=6))
    waves = [noise(16000, 1), noise(12000, 2), torch.zeros(16000), noise(24000, 3)]
    conds = ["hello world", {"text": "a b c"}, "silence", {"transcript": "x"}]
    out = reward(waves, conds, sample_rate=16000)
    assert out.shape == (4,) and out.dtype == torch.float32
    assert out[2].item() == 0.0 and 2 not in reward.last_transcripts          # silent: worst, no model call
    # each score is the shaping of the WER of the model's own transcript against the reference text
    texts = reward.last_transcripts
    for i, ref in [(0, "hello world"), (1, "a b c"), (3, "x")]:
        assert out[i].item() == pytest.approx(shape_error(word_error_rate(ref, texts[i]), "linear"))
    # deterministic, and batch-size invariant (1 vs 2 vs 4 clips per model call)
    assert torch.equal(out, reward(waves, conds, sample_rate=16000))
    for bs in (1, 4):
        other = WhisperAsr(WhisperAsr.Config(checkpoint=tiny_whisper, batch_size=bs, max_new_tokens=6))
        assert torch.equal(out, other(waves, conds, sample_rate=16000))
    # a reference equal to the model's own transcript scores 1 (CER 0), another one less
    exact = WhisperAsr(WhisperAsr.Config(checkpoint=tiny_whisper, max_new_tokens=6, metric="cer", normalize=False))
    clips = [waves[0], waves[1], waves[3]]
    hyps = exact.transcribe([c.numpy() for c in clips])
    assert all(h.strip() for h in hyps)
    assert torch.equal(exact(clips, hyps, sample_rate=16000), torch.ones(3))
    assert (exact(clips, ["zz" + h for h in hyps], sample_rate=16000) < 1).all()
    # resampling: the same clip given at 8 kHz is resampled before transcription, without error
    assert reward([noise(8000, 4)], ["hi"], sample_rate=8000).shape == (1,)


def test_whisper_asr_reference_from_metadata_and_nan_for_empty(tiny_whisper):
    reward = WhisperAsr(WhisperAsr.Config(checkpoint=tiny_whisper, max_new_tokens=4, metric="cer", shaping="tanh"))
    out = reward([noise(16000, 5), noise(16000, 6)], [{}, {}], transcript=["!!!", "abc"], sample_rate=16000)
    assert math.isnan(out[0].item())                                  # reference empty after normalization
    assert 0.0 <= out[1].item() <= 1.0


def test_whisper_asr_checkpoint_error_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="local Whisper folder"):
        WhisperAsr(WhisperAsr.Config(checkpoint=str(tmp_path)))


def test_wavlm_speaker_similarity_tiny(tiny_wavlm):
    reward = WavLMSpeakerSimilarity(WavLMSpeakerSimilarity.Config(checkpoint=tiny_wavlm, sample_rate=16000,
                                                                  batch_size=2))
    ref_a, ref_b = noise(8000, 10), noise(6000, 11)
    waves = [ref_a.clone(), noise(7000, 12), torch.zeros(8000), noise(9000, 13), noise(5000, 14)]
    conds = [{"reference_audio": ref_a}, {"reference_audio": ref_a}, {"reference_audio": ref_b},
             {"reference_audio": ref_b}, {"prompt": "no reference"}]
    out = reward(waves, conds)
    assert out.shape == (5,) and out.dtype == torch.float32
    assert out[0].item() == pytest.approx(1.0, abs=1e-5)              # the reference itself
    assert out[2].item() == -1.0                                      # silent: the worst cosine
    assert math.isnan(out[4].item())                                  # no reference: not applicable
    assert -1.0 <= out[1].item() <= 1.0 and -1.0 <= out[3].item() <= 1.0
    # deterministic and batch-size invariant (padded batches are masked)
    assert torch.allclose(out, reward(waves, conds), rtol=0, atol=0, equal_nan=True)
    big = WavLMSpeakerSimilarity(WavLMSpeakerSimilarity.Config(checkpoint=tiny_wavlm, sample_rate=16000,
                                                               batch_size=16))
    assert torch.allclose(out, big(waves, conds), atol=1e-5, equal_nan=True)
    singles = torch.cat([reward(waves[i:i + 1], conds[i:i + 1]) for i in range(5)])
    assert torch.allclose(out, singles, atol=1e-5, equal_nan=True)


def test_wavlm_reference_as_metadata_column_with_its_own_rate(tiny_wavlm):
    reward = WavLMSpeakerSimilarity(WavLMSpeakerSimilarity.Config(checkpoint=tiny_wavlm))
    ref16 = noise(16000, 20)
    ref8 = resample(ref16, 16000, 8000)
    # same voice clip: outputs at 16 kHz, reference passed at 8 kHz and resampled back
    out = reward([ref16], [{}], sample_rate=16000, reference_audio=[ref8], reference_sample_rate=8000)
    assert out.item() > 0.9
    with pytest.raises(ValueError, match="no sample rate"):
        reward([ref16], [{"reference_audio": ref16}])
