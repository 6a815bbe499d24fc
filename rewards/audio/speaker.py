"""Speaker-similarity rewards: cosine between speaker embeddings of the output and a reference voice.

Backends: transformers `WavLMForXVector` (Chen et al., 2022, "WavLM"; x-vector head, Snyder et al. 2018;
e.g. microsoft/wavlm-base-plus-sv) and Resemblyzer's GE2E LSTM encoder (Wan et al., 2018, "Generalized
End-to-End Loss for Speaker Verification"). The reward is the cosine in [-1, 1] (Resemblyzer's embeddings
are non-negative, so its cosines lie in [0, 1]). Silent or empty outputs (`waveforms.is_silent`, and for
Resemblyzer clips with no voiced frame left after its VAD) score -1, the worst value; a sample without
reference audio, or with a silent one, scores NaN.

Reference audio per sample: metadata column `reference_audio` (one waveform per sample, rate from metadata
`reference_sample_rate`), else `conds[i]["reference_audio"]` (rate `conds[i]["reference_sample_rate"]`),
rates defaulting to the config's `sample_rate`. Identical references (a group's shared prompt voice) are
embedded once per call.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .waveforms import is_silent, reference_waveforms, resample, sample_rates, to_waveforms

WORST = -1.0


@dataclass
class SpeakerConfig:
    """Fields every speaker-similarity reward shares."""

    checkpoint: str | None = None  # local model folder/file (see the backend's class docstring)
    sample_rate: int | None = None  # Hz of outputs and references when metadata carries none
    reference_key: str = "reference_audio"  # reference waveform key in metadata columns or conds[i]
    batch_size: int = 16  # clips per model call
    min_seconds: float = 0.1  # shorter outputs count as empty and score -1
    silence_peak: float = 1e-4  # outputs whose peak |amplitude| is below this count as silent and score -1

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


class SpeakerSimilarity:
    """Base: reference lookup, silence, dedup and cosine; subclasses implement `embed`."""

    name = "speaker_similarity"
    reads_media = ("outputs:audio",)  # decoded media it reads; references travel as tensors (payload.media_reads)
    cfg: SpeakerConfig

    def embed(self, waves: list[Tensor], rates: list[int]) -> list[Tensor | None]:
        """Clips -> one L2-normalized embedding `[D]` each (None: nothing voiced to embed)."""
        raise NotImplementedError

    def _silent(self, wave: Tensor, rate: int) -> bool:
        return is_silent(wave, rate, self.cfg.min_seconds, self.cfg.silence_peak)

    def __call__(self, outputs: Any, conds: list, group_ids: Tensor | None = None, **metadata: Any) -> Tensor:
        waves = to_waveforms(outputs)
        n = len(waves)
        rates = sample_rates(metadata, self.cfg.sample_rate, n, self.name)
        refs = reference_waveforms(conds, metadata, n, self.cfg.reference_key, self.cfg.sample_rate, self.name)
        scores = torch.full((n,), float("nan"), dtype=torch.float32)
        # unique non-silent references, keyed by their content
        ref_index: dict[tuple, int] = {}
        ref_clips: list[tuple[Tensor, int]] = []
        ref_of: dict[int, int] = {}
        for i, ref in enumerate(refs):
            if ref is None or self._silent(*ref):
                continue
            key = (ref[1], ref[0].numel(), hashlib.blake2b(ref[0].numpy().tobytes(), digest_size=16).digest())
            if key not in ref_index:
                ref_index[key] = len(ref_clips)
                ref_clips.append(ref)
            ref_of[i] = ref_index[key]
        todo = []
        for i in ref_of:
            if self._silent(waves[i], rates[i]):
                scores[i] = WORST
            else:
                todo.append(i)
        if not todo:
            return scores
        ref_emb = self._embed_batched([c[0] for c in ref_clips], [c[1] for c in ref_clips])
        out_emb = self._embed_batched([waves[i] for i in todo], [rates[i] for i in todo])
        for i, emb in zip(todo, out_emb):
            ref = ref_emb[ref_of[i]]
            if ref is None:
                continue  # a reference with nothing voiced: not applicable
            scores[i] = WORST if emb is None else float((emb.float() * ref.float()).sum())
        return scores

    def _embed_batched(self, waves: list[Tensor], rates: list[int]) -> list[Tensor | None]:
        out: list[Tensor | None] = []
        for start in range(0, len(waves), self.cfg.batch_size):
            out += self.embed(waves[start:start + self.cfg.batch_size], rates[start:start + self.cfg.batch_size])
        return out


class WavLMSpeakerSimilarity(SpeakerSimilarity):
    """Speaker cosine with transformers `WavLMForXVector`; checkpoint = a local folder with the model and its
    `Wav2Vec2FeatureExtractor` config (e.g. a snapshot of microsoft/wavlm-base-plus-sv, MIT)."""

    name = "speaker_similarity_wavlm"

    @dataclass
    class Config(SpeakerConfig):
        pass

    def __init__(self, cfg: Config | None = None, device: str | torch.device = "cpu"):
        from transformers import AutoFeatureExtractor, WavLMForXVector

        self.cfg = cfg = cfg or self.Config()
        if not cfg.checkpoint or not (Path(cfg.checkpoint) / "config.json").is_file():
            raise FileNotFoundError(f"{self.name}: checkpoint must be a local WavLMForXVector folder with "
                                    f"config.json (e.g. microsoft/wavlm-base-plus-sv), got {cfg.checkpoint!r}")
        self.device = torch.device(device)
        self.extractor = AutoFeatureExtractor.from_pretrained(cfg.checkpoint, local_files_only=True)
        self.model = WavLMForXVector.from_pretrained(cfg.checkpoint, local_files_only=True).to(self.device).eval()
        self.rate = int(self.extractor.sampling_rate)
        # without an attention mask, zero padding would change a clip's embedding: embed clips one by one then
        self.padded_batches = bool(getattr(self.extractor, "return_attention_mask", False))

    @torch.no_grad()
    def embed(self, waves: list[Tensor], rates: list[int]) -> list[Tensor | None]:
        clips = [resample(w, r, self.rate).numpy() for w, r in zip(waves, rates)]
        groups = [clips] if self.padded_batches else [[c] for c in clips]
        out = []
        for group in groups:
            batch = self.extractor(group, sampling_rate=self.rate, padding=True, return_tensors="pt",
                                   return_attention_mask=self.padded_batches).to(self.device)
            emb = self.model(**batch).embeddings.float()                     # [B, D]
            out += list(torch.nn.functional.normalize(emb, dim=-1).cpu())
        return out


class ResemblyzerSpeakerSimilarity(SpeakerSimilarity):
    """Speaker cosine with Resemblyzer's VoiceEncoder; checkpoint = a `.pt` weights file, default the
    `pretrained.pt` the `resemblyzer` package ships (Apache-2.0)."""

    name = "speaker_similarity_resemblyzer"

    @dataclass
    class Config(SpeakerConfig):
        pass

    def __init__(self, cfg: Config | None = None, device: str | torch.device = "cpu"):
        from resemblyzer import VoiceEncoder, preprocess_wav, sampling_rate

        self.cfg = cfg = cfg or self.Config()
        if cfg.checkpoint and not Path(cfg.checkpoint).is_file():
            raise FileNotFoundError(f"{self.name}: checkpoint {cfg.checkpoint!r} is not a file; expected a "
                                    "Resemblyzer .pt weights file, or leave it unset for the packaged one")
        self.encoder = VoiceEncoder(torch.device(device), verbose=False, weights_fpath=cfg.checkpoint)
        self.preprocess = preprocess_wav
        self.rate = int(sampling_rate)

    @torch.no_grad()
    def embed(self, waves: list[Tensor], rates: list[int]) -> list[Tensor | None]:
        out: list[Tensor | None] = []
        for w, r in zip(waves, rates):
            # the encoder resamples to 16 kHz, normalizes volume and trims long silences with webrtcvad
            clip = self.preprocess(resample(w, r, self.rate).numpy().astype(np.float32))
            if clip.size < self.rate * self.cfg.min_seconds:
                out.append(None)  # nothing voiced left
                continue
            out.append(torch.from_numpy(np.asarray(self.encoder.embed_utterance(clip), dtype=np.float32)))
        return out
