"""Multi-label scene classifiers (sigmoid BCE) on top of `rsec.training`.

`rsec.training.loop.fit` needs an integer 'label' per example; it gets the first
present class (used only for its logged top-1 'accuracy'), while the loss reads the
multi-label 'targets' [N, K].
"""
from __future__ import annotations

from typing import Callable

import jax
import numpy as np
import optax

from rsec import checks, parallel
from rsec.models.classifiers import make_model
from rsec.training.loop import fit
from rsec.training.state import TrainState, create_train_state


def bce_loss(logits: jax.Array, batch: dict) -> jax.Array:
  """Mean sigmoid cross-entropy against batch['targets'] [B, K] in {0, 1}."""
  return optax.sigmoid_binary_cross_entropy(logits, batch["targets"]).mean()


def train_multilabel(images: np.ndarray, targets: np.ndarray, *, model: str, seed: int,
                     steps: int, batch_size: int, lr: float = 3e-3, mesh=None,
                     checkpointer=None, writer=None, steps_per_call: int = 10,
                     progress: bool = False, desc: str = "classifier",
                     perturb: Callable | None = None, extra: dict | None = None
                     ) -> TrainState:
  """Trains a registered classifier with K = targets.shape[1] sigmoid outputs.

  images float32 [N, H, W, 3] in [0, 1]; targets float32 [N, K] in {0, 1}.
  perturb: a training mode's batch perturbation (e.g. `rsec.context.augment`); extra:
  more per-example arrays [N, ...] for it, batched alongside.
  """
  checks.check_shape("targets", targets, (images.shape[0], None))
  net = make_model(model, targets.shape[1])
  tx = optax.adam(optax.cosine_decay_schedule(lr, steps))
  state = create_train_state(net, tx, jax.random.key(seed), (1,) + images.shape[1:])
  data = {"image": images, "label": np.argmax(targets, 1).astype(np.int32),
          "targets": targets.astype(np.float32), **(extra or {})}
  state, _ = fit(state, data, key=jax.random.key(seed + 1), batch_size=batch_size,
                 num_steps=steps, seed=seed, mesh=mesh, loss_fn=bce_loss, perturb=perturb,
                 steps_per_call=steps_per_call, checkpointer=checkpointer,
                 checkpoint_every=max(steps, 1), writer=writer, progress=progress, desc=desc)
  return state


def scores_fn(state: TrainState) -> Callable[[jax.Array], jax.Array]:
  """x [B, H, W, 3] -> per-class probabilities [B, K] (inference-mode BatchNorm)."""
  logits = state.logits_fn()
  return lambda x: jax.nn.sigmoid(logits(x))


def predict(score: Callable, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
  """Scores of a whole array, data-parallel in padded batches (`parallel.predict_batches`:
  one compile per batch size)."""
  return parallel.predict_batches(jax.jit(score), (images,), batch_size)
