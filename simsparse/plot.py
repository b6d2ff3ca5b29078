"""Plots (matplotlib, headless). Each function writes a PNG and returns its path."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def speedup_bars(table: pd.DataFrame, path: str | Path, title: str = "", baseline: str = "dense") -> Path:
    """Grouped bars: time per hardware (groups) and weight sparsity (bars), speed-up annotated."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    hws = list(dict.fromkeys(table["hardware"]))
    pats = list(dict.fromkeys(table["sparsity"]))
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(hws), 4.2))
    width = 0.8 / max(len(pats), 1)
    for j, pat in enumerate(pats):
        sub = table[table.sparsity == pat].set_index("hardware")
        xs = [i + (j - (len(pats) - 1) / 2) * width for i in range(len(hws))]
        ys = [sub["total_s"].get(h, float("nan")) * 1e3 for h in hws]
        bars = ax.bar(xs, ys, width, label=pat)
        if "speedup" in sub:
            for b, h in zip(bars, hws, strict=True):
                s = sub["speedup"].get(h)
                if s is not None and pat != baseline:
                    ax.annotate(f"{s:.2f}x", (b.get_x() + b.get_width() / 2, b.get_height()),
                                ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(hws)), hws)
    ax.set_ylabel("predicted time (ms)")
    ax.set_title(title)
    ax.legend(title="weight sparsity", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
