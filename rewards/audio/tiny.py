"""Tiny random audio checkpoints from real transformers classes (Whisper, WavLM x-vector), for tests,
benchmarks and CPU demos: each saves a complete local folder that the rewards load like a real one."""

from __future__ import annotations

from pathlib import Path

import torch

WHISPER_SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|translate|>",
                    "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]


def make_tiny_whisper(folder: str | Path) -> str:
    """A 1-layer WhisperForConditionalGeneration + WhisperProcessor (byte-level vocab, 16 mel bins, 2 s
    windows) saved to `folder`; returns the folder."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )

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


def make_tiny_wavlm(folder: str | Path) -> str:
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
