"""Training modes: each is a batch perturbation before the ordinary supervised step.

A mode factory takes `(config, apply_fn)` and returns a `TrainingMode`: a perturbation
`perturb(variables, key, batch) -> batch` (None for normal training) and optionally a loss
`loss(logits, batch) -> scalar` (None: cross-entropy). `apply_fn(variables, x, train=False)`
gives inference-mode logits, which is what perturbations attack (BatchNorm running
statistics, as in the paper). Modes register in `TRAINING_MODES` by name.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
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


@TRAINING_MODES.register("outlier_exposure")
def outlier_exposure(config: ml_collections.ConfigDict, apply_fn: Callable) -> TrainingMode:
  """Outlier exposure (Hendrycks et al., 2019): rows with label -1 are outliers, trained
  towards the uniform posterior with weight `training.outlier_weight` (default 0.5);
  the other rows take the ordinary cross-entropy. Adaptive Misinformation's victim."""
  del apply_fn
  weight = float(config.training.get("outlier_weight", 0.5))

  def loss(logits, batch):
    label = batch["label"]
    log_p = jax.nn.log_softmax(logits.astype(jnp.float32))
    ce = -jnp.take_along_axis(log_p, jnp.maximum(label, 0)[:, None], 1)[:, 0]
    return jnp.mean(jnp.where(label >= 0, ce, -weight * jnp.mean(log_p, -1)))
  return TrainingMode(loss=loss)


@TRAINING_MODES.register("misinformation")
def misinformation(config: ml_collections.ConfigDict, apply_fn: Callable) -> TrainingMode:
  """Adaptive Misinformation's misinformation model: minimises -log(1 - p_label), so it
  learns to put little mass on the true class (computed as a difference of logsumexps)."""
  del config, apply_fn

  def loss(logits, batch):
    logits = logits.astype(jnp.float32)
    true = jax.nn.one_hot(batch["label"], logits.shape[-1], dtype=bool)
    others = jax.nn.logsumexp(jnp.where(true, -jnp.inf, logits), -1)
    return jnp.mean(jax.nn.logsumexp(logits, -1) - others)
  return TrainingMode(loss=loss)


def make_mode(config: ml_collections.ConfigDict, apply_fn: Callable) -> TrainingMode:
  """The mode of `config.training.mode` (ValueError for an unknown mode)."""
  import rsec.training.adversarial  # noqa: F401  (registers the adversarial modes)
  import rsec.manifold.modes  # noqa: F401  (on-manifold and deformation modes)
  return TRAINING_MODES.get(config.training.mode)(config, apply_fn)


def mode_names() -> list[str]:
  import rsec.training.adversarial  # noqa: F401
  import rsec.manifold.modes  # noqa: F401
  return TRAINING_MODES.names()
