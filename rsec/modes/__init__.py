"""Training modes, all in one place: each is a batch perturbation (and optionally a loss)
before the ordinary supervised step (`rsec.training.steps.make_train_step`).

- supervised: normal, outlier_exposure, misinformation
- adversarial: adversarial, adversarial_full, trades
- manifold: on_manifold_true, on_manifold_learned, stn_augment, stn_adversarial (FONTS)
- scenes: context_augment, stuff_swap (SCENES multi-label classifiers and segmenters)

`make_mode(config, apply_fn)` builds `config.training.mode`. This package sits above
`rsec.training`, `rsec.manifold` and `rsec.context` (it imports them; they never import it).
"""
from __future__ import annotations

from typing import Callable

import ml_collections

from rsec.modes.base import TRAINING_MODES, TrainingMode, check_fraction, spread_rows
from rsec.modes import adversarial, manifold, scenes, supervised  # noqa: F401 (register)


def make_mode(config: ml_collections.ConfigDict, apply_fn: Callable) -> TrainingMode:
  """The mode of `config.training.mode` (ValueError for an unknown mode)."""
  return TRAINING_MODES.get(config.training.mode)(config, apply_fn)


def mode_names() -> list[str]:
  return TRAINING_MODES.names()


__all__ = ["TRAINING_MODES", "TrainingMode", "check_fraction", "make_mode", "mode_names",
           "spread_rows"]
