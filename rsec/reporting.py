"""Small helpers for report.md and figures (matplotlib, Agg backend)."""
from __future__ import annotations

import json
import os
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  def fmt(v):
    return f"{v:.4g}" if isinstance(v, float) else str(v)
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
  return "\n".join(lines)


def read_metrics(path: str) -> list[dict[str, Any]]:
  if not os.path.exists(path):
    return []
  rows = []
  with open(path) as f:
    for line in f:
      try:
        rows.append(json.loads(line))
      except ValueError:
        pass
  return rows


def plot_training_curves(metrics_path: str, out_png: str,
                         keys: Sequence[str] = ("train/loss", "train/accuracy")) -> bool:
  """Plots the given keys of metrics.jsonl against step; False if there is nothing to plot."""
  rows = read_metrics(metrics_path)
  fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3))
  axes = [axes] if len(keys) == 1 else axes
  found = False
  for ax, k in zip(axes, keys):
    pts = [(r["step"], r[k]) for r in rows if r.get(k) is not None]
    if pts:
      found = True
      ax.plot(*zip(*pts))
    ax.set_xlabel("step")
    ax.set_title(k)
    ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(out_png, dpi=100)
  plt.close(fig)
  return found
