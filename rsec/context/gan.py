"""Two-player train state for the remover's GAN-style training.

`GanState` is a pytree holding a generator-side and a discriminator-side model (the
in-painter and its PatchGAN, or the mask generator and its realism critic); a step is
`step(state, batch, key) -> (state, metrics)` exactly like classifier steps, so the one
training loop (`rsec.training.loop.run_loop`) trains it.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import struct



@struct.dataclass
class GanState:
  """step, generator (g) and discriminator (d) params and optimizer states."""
  step: jax.Array
  g_params: Any
  d_params: Any
  g_opt: Any
  d_opt: Any
  g_apply: Callable = struct.field(pytree_node=False)
  d_apply: Callable = struct.field(pytree_node=False)
  g_tx: optax.GradientTransformation = struct.field(pytree_node=False)
  d_tx: optax.GradientTransformation = struct.field(pytree_node=False)

  @property
  def params(self) -> dict:
    return {"g": self.g_params, "d": self.d_params}

  def checkpoint_tree(self) -> dict:
    return {"step": self.step, "g_params": self.g_params, "d_params": self.d_params,
            "g_opt": self.g_opt, "d_opt": self.d_opt}

  def replace_tree(self, tree: dict) -> "GanState":
    return self.replace(**tree)


def create_gan_state(g_model, d_model, g_inputs: tuple, d_inputs: tuple, key: jax.Array,
                     g_lr: float, d_lr: float, b1: float = 0.5, b2: float = 0.999) -> GanState:
  """Initialises both models on example inputs (tuples of arrays) with Adam optimizers."""
  kg, kd = jax.random.split(key)
  gp = g_model.init(kg, *g_inputs)["params"]
  dp = d_model.init(kd, *d_inputs)["params"]
  g_tx, d_tx = optax.adam(g_lr, b1, b2), optax.adam(d_lr, b1, b2)
  return GanState(step=jnp.zeros((), jnp.int32), g_params=gp, d_params=dp,
                  g_opt=g_tx.init(gp), d_opt=d_tx.init(dp), g_apply=g_model.apply,
                  d_apply=d_model.apply, g_tx=g_tx, d_tx=d_tx)


def bce_logits(logits: jax.Array, target: float | jax.Array) -> jax.Array:
  """Mean sigmoid binary cross-entropy against a constant or array target."""
  return optax.sigmoid_binary_cross_entropy(logits, jnp.broadcast_to(target, logits.shape)).mean()


def apply_grads(params, opt, tx, grads):
  updates, opt = tx.update(grads, opt, params)
  return optax.apply_updates(params, updates), opt
