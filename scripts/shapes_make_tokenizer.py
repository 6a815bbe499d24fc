"""Writes the shapes world's CLIP tokenizer files (vocab.json, merges.txt) learned from the prompt language's words.

    python scripts/shapes_make_tokenizer.py [--out FOLDER]

By default into both tokenizer folders of the shipped base model (pipelines/shapes/base/tokenizer{,_2}),
which `CLIPTokenizer.from_pretrained` reads. The files are deterministic: re-running reproduces them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mmgrpo.pipelines.shapes import HERE
from mmgrpo.pipelines.shapes.tokenizer import load_tokenizer, write_tokenizer_files
from mmgrpo.rewards.image.shapes import vocabulary_words


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, nargs="*", default=[HERE / "base" / "tokenizer", HERE / "base" / "tokenizer_2"])
    args = ap.parse_args(argv)
    for folder in args.out:
        vocab, merges = write_tokenizer_files(folder)
        tok = load_tokenizer(folder)
        bad = [w for w in vocabulary_words() if len(tok(w, add_special_tokens=False).input_ids) != 1]
        if bad:
            raise SystemExit(f"words that are not one token: {bad}")
        print(f"{vocab} and {merges}: {len(tok)} tokens, every one of {len(vocabulary_words())} words is one token")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
