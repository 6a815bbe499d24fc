"""`mmgrpo plot RUN_DIR`: reward, KL and evaluation curves from metrics.jsonl to a PNG."""

from __future__ import annotations

import json
import math
from pathlib import Path


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; is {run_dir} a run directory of `mmgrpo train`?")
    rows = []
    for i, line in enumerate(path.read_text().splitlines()):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise ValueError(f"{path} line {i + 1} is not valid JSON") from None
    return rows


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw reward (per reward and total), KL and eval curves; returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    rows = read_metrics(run_dir)
    out = Path(out) if out else run_dir / "curves.png"

    def series(key: str) -> tuple[list, list]:
        pts = [(r["step"], r[key]) for r in rows if key in r and isinstance(r[key], (int, float))
               and math.isfinite(r[key])]
        return [p[0] for p in pts], [p[1] for p in pts]

    keys = {k for r in rows for k in r}
    panels = [("reward", sorted(k for k in keys if k.startswith("reward/") and k.endswith("mean"))),
              ("KL", [k for k in ("approx_kl", "kl_ref") if k in keys]),
              ("evaluation", sorted(k for k in keys if k.startswith("eval/")))]
    panels = [p for p in panels if p[1]]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(5 * max(1, len(panels)), 3.6), squeeze=False)
    for ax, (title, ks) in zip(axes[0], panels):
        for k in ks:
            x, y = series(k)
            ax.plot(x, y, marker="o" if len(x) < 30 else None, ms=3, label=k)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
