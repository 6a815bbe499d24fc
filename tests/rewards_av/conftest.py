"""Tiny random checkpoints built in-process from real transformers classes, and espeak-ng speech."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import torch

from mmgrpo.rewards.audio.tiny import make_tiny_wavlm, make_tiny_whisper
from mmgrpo.rewards.text.tiny import make_tiny_bert


@pytest.fixture(scope="session")
def tiny_whisper(tmp_path_factory) -> str:
    return make_tiny_whisper(tmp_path_factory.mktemp("whisper"))


@pytest.fixture(scope="session")
def tiny_wavlm(tmp_path_factory) -> str:
    return make_tiny_wavlm(tmp_path_factory.mktemp("wavlm"))


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    return make_tiny_bert(tmp_path_factory.mktemp("bert"))


def espeak(text: str, voice: str = "en-us+m3") -> tuple[np.ndarray, int]:
    """Speak `text` with espeak-ng into a WAV; returns (float32 mono waveform, sample rate)."""
    from mmgrpo.rewards.payload import read_wav

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install -y espeak-ng)")
    wav = subprocess.run(["espeak-ng", "-v", voice, "--stdout", text], check=True, capture_output=True).stdout
    wave, rate = read_wav(wav, f"espeak {voice}")
    return wave.numpy(), rate


def noise(n: int, seed: int, scale: float = 0.3) -> torch.Tensor:
    """Deterministic Gaussian noise `[n]` float32 (a non-silent test waveform)."""
    return torch.randn(n, generator=torch.Generator().manual_seed(seed)) * scale
