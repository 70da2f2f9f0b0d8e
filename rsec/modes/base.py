"""What a training mode is, the registry every mode joins, and the row-spreading helper.

A mode factory takes `(config, apply_fn)` and returns a `TrainingMode`: a perturbation
`perturb(variables, key, batch) -> batch` (None for normal training) and optionally a loss
`loss(logits, batch) -> scalar` (None: cross-entropy). `apply_fn(variables, x, train=False)`
gives inference-mode logits, which is what perturbations attack (BatchNorm running
statistics, as in the paper). The step that runs them is `rsec.training.steps.make_train_step`.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import ml_collections
import numpy as np

from rsec.registry import Registry


class TrainingMode(NamedTuple):
  perturb: Callable | None = None
  loss: Callable | None = None


ModeFactory = Callable[[ml_collections.ConfigDict, Callable], TrainingMode]
TRAINING_MODES: Registry[ModeFactory] = Registry("training mode")


def check_fraction(name: str, fraction, batch: int) -> None:
  """ValueError unless 0 < fraction <= 1 picks at least one row of a batch of `batch`.

  (A fraction below 0.5 / batch rounds to no perturbed rows: the mode would silently
  become normal training; above 1 it would repeat rows.)
  """
  if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) \
      or not 0 < fraction <= 1:
    raise ValueError(f"{name}={fraction!r} must be a number in (0, 1]")
  if int(round(fraction * batch)) < 1:
    raise ValueError(f"{name}={fraction!r} perturbs no row of a batch of {batch} "
                     f"(round({fraction} * {batch}) = 0); use at least {0.5 / batch:.3g}")


def spread_rows(batch: int, fraction: float) -> np.ndarray:
  """Indices of round(fraction * batch) rows spread evenly (every other row for 1/2), so
  every device of a data-parallel batch gets its share. ValueError for a fraction outside
  (0, 1] or one that picks no row."""
  check_fraction("fraction", fraction, batch)
  m = int(round(fraction * batch))
  return np.floor(np.arange(m) / fraction).astype(np.int32)
