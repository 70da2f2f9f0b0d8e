"""Transfer of adversarial examples from stolen models to the victim (JBDA's purpose).

PGD (`rsec.attacks.pgd`, the one attack engine) runs on each model of a stack at once
(`vmap` over its parameters) against images the victim classifies correctly; an example
transfers when the victim misclassifies it too.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from rsec import parallel
from rsec.attacks.gradient import pgd


def stack_adversarials(apply_fn: Callable, variables: Any, x: np.ndarray, y: np.ndarray, *,
                       eps: float, steps: int, key: jax.Array) -> np.ndarray:
  """L-inf PGD examples [M, N, ...] crafted on each of the M stacked models (variables with
  leaves [M, ...]) for images x [N, ...] with labels y [N] (untargeted cross-entropy, the
  highest-loss iterate)."""
  attack = pgd(eps, steps=steps, select="max_loss")

  @jax.jit
  def craft(v, xb, yb):
    return jax.vmap(lambda vm: attack(lambda z: apply_fn(vm, z, train=False), key, xb, yb,
                                      check=False))(v)
  out = parallel.predict_batches(lambda xb, yb: jnp.moveaxis(craft(variables, xb, yb), 0, 1),
                                 (x, y), 200)
  return np.moveaxis(out, 0, 1)


def transfer_success(victim_logits: Callable, x_adv: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Share [M] of each model's adversarial examples x_adv [M, N, ...] that the victim
  misclassifies (labels y [N])."""
  m, n = x_adv.shape[:2]
  pred = parallel.predict_batches(lambda xb: jnp.argmax(victim_logits(xb), -1),
                                  (x_adv.reshape((m * n,) + x_adv.shape[2:]),), 500)
  return np.mean(pred.reshape(m, n) != y[None], axis=1)
