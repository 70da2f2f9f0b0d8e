"""Training modes: each is a batch perturbation before the ordinary supervised step.

A mode factory takes `(config, apply_fn)` and returns a `TrainingMode`: a perturbation
`perturb(variables, key, batch) -> batch` (None for normal training) and optionally a loss
`loss(logits, batch) -> scalar` (None: cross-entropy). `apply_fn(variables, x, train=False)`
gives inference-mode logits, which is what perturbations attack (BatchNorm running
statistics, as in the paper). Modes register in `TRAINING_MODES` by name.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import ml_collections

from rsec.registry import Registry


class TrainingMode(NamedTuple):
  perturb: Callable | None = None
  loss: Callable | None = None


ModeFactory = Callable[[ml_collections.ConfigDict, Callable], TrainingMode]
TRAINING_MODES: Registry[ModeFactory] = Registry("training mode")


@TRAINING_MODES.register("normal")
def normal(config: ml_collections.ConfigDict, apply_fn: Callable) -> TrainingMode:
  del config, apply_fn
  return TrainingMode()


def make_mode(config: ml_collections.ConfigDict, apply_fn: Callable) -> TrainingMode:
  """The mode of `config.training.mode` (ValueError for an unknown mode)."""
  import rsec.training.adversarial  # noqa: F401  (registers the adversarial modes)
  import rsec.manifold.modes  # noqa: F401  (on-manifold and deformation modes)
  return TRAINING_MODES.get(config.training.mode)(config, apply_fn)


def mode_names() -> list[str]:
  import rsec.training.adversarial  # noqa: F401
  import rsec.manifold.modes  # noqa: F401
  return TRAINING_MODES.names()
