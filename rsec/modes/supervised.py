"""Supervised modes without an attack: normal training, and the two objectives of
Adaptive Misinformation's defended victim (outlier exposure, the misinformation model)."""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections

from rsec.modes.base import TRAINING_MODES, TrainingMode


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
