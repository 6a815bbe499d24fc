"""What the multi-process benchmarks share: a free local port for `accelerate launch`, and running one variant
as its own process(es) and reading the JSON line it prints."""

from __future__ import annotations

import json
import socket
import subprocess


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pick_variants(bench: str, spec: str, known) -> list[str]:
    """The comma-separated `--variants` subset, each checked against `known`."""
    names = [v.strip() for v in spec.split(",") if v.strip()]
    bad = [v for v in names if v not in known]
    if bad:
        raise SystemExit(f"{bench}: --variants {bad} unknown; choose from {', '.join(known)}")
    return names


def run_json(bench: str, name: str, cmd: list[str], env: dict, timeout: float) -> dict:
    """Run `cmd` and return the last JSON line of its stdout; a failure names the benchmark and the variant."""
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise SystemExit(f"{bench}: variant {name} failed (exit {res.returncode}):\n{res.stderr[-3000:]}")
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise SystemExit(f"{bench}: variant {name} printed no result:\n{res.stdout[-2000:]}")
    return json.loads(lines[-1])
