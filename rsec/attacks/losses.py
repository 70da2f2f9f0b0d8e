"""Attack objectives on logits, all to be *maximised*, one value per example.

Signature of every loss: `loss(logits [B, K], y [B], target [B], kappa) -> [B]`, where
`target` is the class a targeted loss pushes towards (ignored by untargeted losses) and
`kappa` is the C&W confidence (ignored by losses without one). Computed in float32.
"""
from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

from rsec.registry import Registry

LossFn = Callable[..., jax.Array]
LOSSES: Registry[LossFn] = Registry("loss")
TARGETED = frozenset({"ce_targeted", "margin_targeted", "dlr_targeted"})
# DLR's denominator reads the 3rd (targeted: 4th) largest logit.
MIN_CLASSES = {"dlr": 3, "dlr_targeted": 4}
_DLR_EPS = 1e-12


def _pick(logits: jax.Array, c: jax.Array) -> jax.Array:
  return jnp.take_along_axis(logits, c[:, None].astype(jnp.int32), axis=1)[:, 0]


def _max_other(logits: jax.Array, c: jax.Array) -> jax.Array:
  """max_{j != c} logits_j, per row."""
  hit = jax.nn.one_hot(c, logits.shape[1], dtype=bool)
  return jnp.max(jnp.where(hit, -jnp.inf, logits), axis=1)


@LOSSES.register("ce")
def cross_entropy(logits, y, target=None, kappa=None) -> jax.Array:
  """Cross-entropy of the true class, -log softmax(logits)_y."""
  del target, kappa
  z = logits.astype(jnp.float32)
  return jax.nn.logsumexp(z, axis=1) - _pick(z, y)


@LOSSES.register("ce_targeted")
def cross_entropy_targeted(logits, y, target, kappa=None) -> jax.Array:
  """log softmax(logits)_target (maximising it pulls towards the target)."""
  del y, kappa
  z = logits.astype(jnp.float32)
  return _pick(z, target) - jax.nn.logsumexp(z, axis=1)


@LOSSES.register("margin")
def margin(logits, y, target=None, kappa=jnp.inf) -> jax.Array:
  """C&W margin max_{j != y} z_j - z_y, capped at kappa (the confidence; inf: no cap)."""
  del target
  z = logits.astype(jnp.float32)
  return jnp.minimum(_max_other(z, y) - _pick(z, y), kappa)


@LOSSES.register("margin_targeted")
def margin_targeted(logits, y, target, kappa=jnp.inf) -> jax.Array:
  """Targeted C&W margin z_t - max_{j != t} z_j, capped at kappa."""
  del y
  z = logits.astype(jnp.float32)
  return jnp.minimum(_pick(z, target) - _max_other(z, target), kappa)


@LOSSES.register("dlr")
def dlr(logits, y, target=None, kappa=None) -> jax.Array:
  """Croce & Hein's difference of logits ratio, -(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3).

  Invariant to shifting and positively rescaling the logits. Needs K >= 3.
  """
  del target, kappa
  z = logits.astype(jnp.float32)
  s = -jnp.sort(-z, axis=1)
  return -(_pick(z, y) - _max_other(z, y)) / (s[:, 0] - s[:, 2] + _DLR_EPS)


@LOSSES.register("dlr_targeted")
def dlr_targeted(logits, y, target, kappa=None) -> jax.Array:
  """Targeted DLR, -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2). Needs K >= 4."""
  del kappa
  z = logits.astype(jnp.float32)
  s = -jnp.sort(-z, axis=1)
  return -(_pick(z, y) - _pick(z, target)) / (s[:, 0] - 0.5 * (s[:, 2] + s[:, 3]) + _DLR_EPS)


def make_loss(name: str, kappa: jax.Array | float = jnp.inf) -> LossFn:
  """`loss(logits, y, target) -> [B]` for a registered name, with kappa bound."""
  return functools.partial(LOSSES.get(name), kappa=kappa)


def ranked_targets(logits: jax.Array, y: jax.Array, n: int) -> jax.Array:
  """Target classes for targeted attacks: the n most likely classes other than y.

  logits [B, K], y [B] -> [n, B]; row r is the (r+1)-th highest-scoring class != y.
  """
  z = jnp.where(jax.nn.one_hot(y, logits.shape[1], dtype=bool), -jnp.inf,
                logits.astype(jnp.float32))
  _, idx = jax.lax.top_k(z, n)
  return idx.T.astype(jnp.int32)
