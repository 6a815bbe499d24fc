"""Write docs/methods.md from the method registries (or, with --check, fail if the page is out of date)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PAGE = Path(__file__).resolve().parents[1] / "docs" / "methods.md"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--check", action="store_true", help="exit 1 if docs/methods.md differs from the registries")
    p.add_argument("--out", type=Path, default=PAGE, help=f"page to write (default {PAGE})")
    a = p.parse_args(argv)
    import mmgrpo.methods  # noqa: F401  (registers the catalog)
    from mmgrpo.methods.docs import render

    text = render()
    if a.check:
        if not a.out.exists() or a.out.read_text() != text:
            print(f"{a.out} is out of date; run: python scripts/gen_methods_doc.py", file=sys.stderr)
            return 1
        return 0
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(text)
    print(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
