"""Metric writers: `metrics.jsonl` (one JSON object per logged step) and TensorBoard events."""
from __future__ import annotations

import json
import math
import os
from typing import Mapping

import jax


class MetricWriter:
  """Appends scalars to `<workdir>/metrics.jsonl` and TensorBoard event files.

  Only process 0 writes, so multi-host runs produce one log. On resume, rows logged
  after the checkpoint the run restarted from are dropped (`truncate_after`), so the
  log of an interrupted run equals that of an uninterrupted one.
  """

  def __init__(self, workdir: str, *, tensorboard: bool = True):
    self.enabled = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if self.enabled:
      os.makedirs(workdir, exist_ok=True)
      if tensorboard:
        from tensorboardX import SummaryWriter
        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"), flush_secs=30)

  def truncate_after(self, step: int) -> None:
    """Drops rows with step > `step` (written after the checkpoint we resume from)."""
    if not (self.enabled and os.path.exists(self.path)):
      return
    with open(self.path) as f:
      rows = [l for l in f if l.strip()]
    keep = []
    for line in rows:
      try:
        if json.loads(line)["step"] <= step:
          keep.append(line)
      except (ValueError, KeyError):  # a half-written last line from a crash
        pass
    tmp = self.path + ".tmp"
    with open(tmp, "w") as f:
      f.writelines(keep)
    os.replace(tmp, self.path)

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    row = {"step": int(step)}
    row.update({k: _jsonable(v) for k, v in scalars.items()})
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")
    if self._tb is not None:
      for k, v in scalars.items():
        self._tb.add_scalar(k, float(v), int(step))

  def close(self) -> None:
    if self._tb is not None:
      self._tb.flush()
      self._tb.close()


def _jsonable(v) -> float | None:
  v = float(v)
  return v if math.isfinite(v) else None
