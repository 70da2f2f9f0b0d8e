"""Training modes: each is a batch perturbation before the ordinary supervised step.

A mode factory takes `(config, apply_fn)` and returns `perturb(variables, key, batch) ->
batch` or None (normal training). `apply_fn(variables, x, train=False)` gives inference-mode
logits, which is what perturbations attack (BatchNorm running statistics, as in the paper).
"""
from __future__ import annotations

from typing import Callable

import ml_collections

from rsec.registry import Registry

ModeFactory = Callable[[ml_collections.ConfigDict, Callable], Callable | None]
TRAINING_MODES: Registry[ModeFactory] = Registry("training mode")


@TRAINING_MODES.register("normal")
def normal(config: ml_collections.ConfigDict, apply_fn: Callable) -> None:
  del config, apply_fn
  return None


def make_perturb(config: ml_collections.ConfigDict, apply_fn: Callable) -> Callable | None:
  """The perturbation of `config.training.mode` (ValueError for an unknown mode)."""
  return TRAINING_MODES.get(config.training.mode)(config, apply_fn)
