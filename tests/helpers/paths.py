"""Paths the core tests share (kept out of conftest.py: several test folders have their own conftest)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOY = ROOT / "configs" / "toy" / "tokens.yaml"
