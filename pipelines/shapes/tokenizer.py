"""Builds the shapes world's CLIP BPE vocabulary (vocab.json, merges.txt) from the prompt language's words.

CLIP's tokenizer (Radford et al., 2021) is byte-level BPE (Sennrich et al., 2016) with an end-of-word
marker "</w>". The vocabulary here keeps CLIP's layout: the 256 byte symbols, the same with "</w>",
one token per learned merge, then `<|startoftext|>` and `<|endoftext|>`. Merges are learned with the
classic BPE loop on the language's words until each word is a single token, so every prompt word is
one token while any other text still tokenizes (into byte pieces).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from mmgrpo.modalities.flow.tiny import bytes_to_unicode  # GPT-2 / CLIP's byte -> unicode map
from mmgrpo.rewards.image.shapes import vocabulary_words

END = "</w>"
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MODEL_MAX_LENGTH = 16
"""Tokens per prompt (BOS + words + EOS, padded): the longest prompt of the language has 10 words."""


def learn_merges(words: list[str]) -> list[tuple[str, str]]:
    """BPE merges that turn each word (plus "</w>") into a single symbol; ties broken alphabetically."""
    byte_map = bytes_to_unicode()
    seqs = []
    for w in sorted(set(words)):
        chars = [byte_map[b] for b in w.encode("utf-8")]
        seqs.append(chars[:-1] + [chars[-1] + END])
    merges: list[tuple[str, str]] = []
    while True:
        pairs = Counter((a, b) for s in seqs for a, b in zip(s, s[1:]))
        if not pairs:
            return merges
        top = max(pairs.values())
        best = min(p for p, c in pairs.items() if c == top)
        merges.append(best)
        joined = best[0] + best[1]
        new_seqs = []
        for s in seqs:
            out, i = [], 0
            while i < len(s):
                if i + 1 < len(s) and (s[i], s[i + 1]) == best:
                    out.append(joined)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            new_seqs.append(out)
        seqs = new_seqs


def build_vocab(words: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocab: token -> id, merges) for `words`, in CLIP's layout."""
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + END for s in symbols]
    merges = learn_merges(words)
    tokens += [a + b for a, b in merges]
    tokens += [BOS, EOS]
    return {t: i for i, t in enumerate(tokens)}, merges


def write_tokenizer_files(folder: Path) -> tuple[Path, Path]:
    """Write `vocab.json` and `merges.txt` for the shapes language into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = build_vocab(vocabulary_words())
    vocab_path, merges_path = folder / "vocab.json", folder / "merges.txt"
    vocab_path.write_text(json.dumps(vocab, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    merges_path.write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    return vocab_path, merges_path


def load_tokenizer(folder: Path):
    """A `transformers.CLIPTokenizer` from the `vocab.json` / `merges.txt` in `folder`."""
    from transformers import CLIPTokenizer

    folder = Path(folder)
    return CLIPTokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"),
                         model_max_length=MODEL_MAX_LENGTH)
