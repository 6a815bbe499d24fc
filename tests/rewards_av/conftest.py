"""Tiny random checkpoints built in-process from real transformers classes, and espeak-ng speech."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import torch

WHISPER_SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|translate|>",
                    "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]


def make_tiny_whisper(folder) -> str:
    """A 1-layer WhisperForConditionalGeneration + WhisperProcessor (byte-level vocab, 16 mel bins, 2 s
    windows) saved to `folder`; returns the folder."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import (GenerationConfig, WhisperConfig, WhisperFeatureExtractor,
                              WhisperForConditionalGeneration, WhisperProcessor, WhisperTokenizer)

    vocab = {c: i for i, c in enumerate(sorted(ByteLevel.alphabet()))}           # 256 byte symbols
    vocab.update({s: 256 + i for i, s in enumerate(WHISPER_SPECIALS)})
    tok = WhisperTokenizer(vocab=vocab, merges=[], unk_token="<|endoftext|>")
    tok.add_special_tokens({"additional_special_tokens": WHISPER_SPECIALS[1:]})
    ids = tok.convert_tokens_to_ids(WHISPER_SPECIALS)
    fe = WhisperFeatureExtractor(feature_size=16, sampling_rate=16000, hop_length=160, chunk_length=2, n_fft=400)
    cfg = WhisperConfig(vocab_size=len(tok), num_mel_bins=16, d_model=16, encoder_layers=1, decoder_layers=1,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                        decoder_ffn_dim=32, max_source_positions=100, max_target_positions=64,
                        pad_token_id=ids[0], bos_token_id=ids[0], eos_token_id=ids[0],
                        decoder_start_token_id=ids[1], init_std=0.5)
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(cfg).eval()
    model.generation_config = GenerationConfig(decoder_start_token_id=ids[1], eos_token_id=ids[0],
                                               pad_token_id=ids[0], no_timestamps_token_id=ids[8],
                                               max_length=64, is_multilingual=False)
    model.save_pretrained(folder)
    WhisperProcessor(feature_extractor=fe, tokenizer=tok).save_pretrained(folder)
    return str(folder)


def make_tiny_wavlm(folder) -> str:
    """A 1-layer WavLMForXVector (8-dim x-vectors) + Wav2Vec2FeatureExtractor saved to `folder`."""
    from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMForXVector

    cfg = WavLMConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                      conv_dim=(8, 8), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=16,
                      num_conv_pos_embedding_groups=2, tdnn_dim=(8, 8), tdnn_kernel=(3, 1), tdnn_dilation=(1, 1),
                      xvector_output_dim=8, feat_extract_norm="layer", do_stable_layer_norm=True,
                      num_buckets=32, max_bucket_distance=64)
    torch.manual_seed(0)
    WavLMForXVector(cfg).eval().save_pretrained(folder)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                             return_attention_mask=True).save_pretrained(folder)
    return str(folder)


def make_tiny_bert(folder) -> str:
    """A 1-layer BertModel with a 30-word WordPiece vocab saved to `folder` (for mean-pooled embeddings)."""
    from transformers import BertConfig, BertModel, BertTokenizer

    words = ("the a cat dog sat on mat is big small red blue runs fast slow house car tree and of "
             "to in it").split()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=64)).eval().save_pretrained(folder)
    return str(folder)


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
