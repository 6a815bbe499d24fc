"""Audio reward inputs made uniform: waveforms to a list of 1-D float32 tensors, sample rates, silence.

Rewards receive a list of 1-D float waveforms (tensors, numpy arrays or lists, any length), or a `[N, S]`
(or `[N, 1, S]`) tensor. The sample rate comes from metadata `sample_rate` (one int, or one per sample),
else from the reward's config. A waveform counts as silent (and gets the reward's worst score) when it is
empty, shorter than `min_seconds`, holds a non-finite value, or its peak |amplitude| is below
`silence_peak` (default 1e-4, about -80 dBFS).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor


def to_waveforms(outputs: Any, where: str = "outputs") -> list[Tensor]:
    """`outputs` -> list of 1-D float32 CPU tensors, one per sample."""
    if isinstance(outputs, (Tensor, np.ndarray)):
        batch = torch.as_tensor(outputs)
        if batch.ndim == 3 and batch.shape[1] == 1:
            batch = batch[:, 0]
        if batch.ndim != 2:
            raise ValueError(f"{where}: expected waveforms [N, S] (or [N, 1, S]), got shape {list(batch.shape)}")
        return [w.detach().float().cpu() for w in batch]
    if isinstance(outputs, Sequence) and not isinstance(outputs, str):
        out = []
        for i, w in enumerate(outputs):
            t = torch.as_tensor(np.asarray(w) if not isinstance(w, Tensor) else w)
            if t.ndim == 2 and 1 in t.shape:
                t = t.reshape(-1)
            if t.ndim != 1:
                raise ValueError(f"{where}[{i}]: expected a mono 1-D waveform, got shape {list(t.shape)}")
            out.append(t.detach().float().cpu())
        return out
    raise TypeError(f"{where}: expected a list of 1-D waveforms or an [N, S] tensor, got {type(outputs).__name__}")


def sample_rates(metadata: dict, default: int | None, n: int, where: str) -> list[int]:
    """Per-sample sample rates from metadata `sample_rate` (int or list of N), else `default`."""
    sr = metadata.get("sample_rate", default)
    if sr is None:
        raise ValueError(f"{where}: no sample rate; pass sample_rate=<Hz> as metadata or set the reward's "
                         "config sample_rate")
    rates = [int(s) for s in sr] if isinstance(sr, (list, tuple, Tensor, np.ndarray)) else [int(sr)] * n
    if len(rates) != n or any(r <= 0 for r in rates):
        raise ValueError(f"{where}: sample_rate must be one positive int or {n} of them, got {sr!r}")
    return rates


def resample(wave: Tensor, orig: int, target: int) -> Tensor:
    """1-D waveform from `orig` Hz to `target` Hz (torchaudio's windowed-sinc resampler)."""
    if orig == target or wave.numel() == 0:
        return wave
    try:
        import torchaudio.functional as AF
    except ImportError as exc:  # pragma: no cover - torchaudio is in the audio extra
        raise ImportError(f"resampling {orig} Hz -> {target} Hz needs torchaudio: "
                          "pip install 'mmgrpo[audio]'") from exc
    return AF.resample(wave, orig, target)


def is_silent(wave: Tensor, sample_rate: int, min_seconds: float = 0.1, silence_peak: float = 1e-4) -> bool:
    """Empty, too short, non-finite or near-zero peak (see the module docstring)."""
    if wave.numel() < max(1, int(min_seconds * sample_rate)):
        return True
    if not bool(torch.isfinite(wave).all()):
        return True
    return float(wave.abs().max()) < silence_peak


def reference_waveforms(conds: list, metadata: dict, n: int, key: str, default_rate: int | None,
                        where: str) -> list[tuple[Tensor, int] | None]:
    """Per-sample reference audio (waveform, rate): metadata column `key` (+ `reference_sample_rate`),
    else `conds[i][key]` (+ `conds[i]["reference_sample_rate"]`); rates default to `default_rate`."""
    column = metadata.get(key)
    if column is not None and len(column) != n:
        raise ValueError(f"{where}: metadata {key!r} has {len(column)} waveforms for {n} samples")
    rate_col = metadata.get("reference_sample_rate")
    out: list[tuple[Tensor, int] | None] = []
    for i in range(n):
        cond = conds[i] if i < len(conds) and isinstance(conds[i], dict) else {}
        wave = column[i] if column is not None else cond.get(key)
        if wave is None:
            out.append(None)
            continue
        rate = rate_col if rate_col is not None else cond.get("reference_sample_rate", default_rate)
        if isinstance(rate, (list, tuple)):
            rate = rate[i]
        if rate is None:
            raise ValueError(f"{where}: sample {i} has reference audio but no reference_sample_rate "
                             "(metadata, conds[i] or the config's sample_rate)")
        out.append((to_waveforms([wave], f"{where}: {key}[{i}]")[0], int(rate)))
    return out
