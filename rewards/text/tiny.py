"""A tiny random sentence encoder (1-layer BERT, 30-word vocab) from real transformers classes, saved as a
local folder for tests, benchmarks and CPU demos of the embedding-similarity reward."""

from __future__ import annotations

from pathlib import Path

import torch


def make_tiny_bert(folder: str | Path) -> str:
    """A 1-layer BertModel with a 30-word WordPiece vocab saved to `folder` (for mean-pooled embeddings)."""
    from transformers import BertConfig, BertModel, BertTokenizer

    words = ("the a cat dog sat on mat is big small red blue runs fast slow house car tree and of "
             "to in it").split()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=64)).eval().save_pretrained(folder)
    return str(folder)
