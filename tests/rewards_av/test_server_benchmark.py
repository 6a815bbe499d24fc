"""Smoke runs of benchmarks/rewards.py's server sections: concurrent clients (fast) and memory (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def bench(*args: str) -> dict:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "rewards.py"), *args], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_concurrency_section_reports_requests_per_second_per_client_count():
    report = bench("--sections", "concurrency", "--clients", "1,3", "--min-time", "0.05")
    settings, *rows = report["concurrency"]
    assert settings["server"]["max_connections"] == 32 and report["results"] == []
    assert [r["clients"] for r in rows] == [1, 3]
    assert all(r["requests"] > 0 and r["errors"] == 0 and r["requests_per_s"] > 0 for r in rows)


@pytest.mark.slow
def test_memory_section_refuses_the_bomb_and_serves_the_normal_request():
    rows = bench("--sections", "memory")["memory"]
    assert [r["status"] for r in rows] == [200, 413, 200, None]
    assert rows[1]["body_bytes"] < 12_000 and rows[1]["peak_rss_growth_mb"] < rows[2]["peak_rss_growth_mb"]
