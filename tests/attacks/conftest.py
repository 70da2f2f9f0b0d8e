"""Shared fixtures: a tiny MLP trained for a second on synthetic 8x8 images, and helpers."""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

NUM_CLASSES = 5
SHAPE = (8, 8, 1)


class Trained(NamedTuple):
  logits_fn: object   # images [B, 8, 8, 1] -> logits [B, 5]
  x: jax.Array        # test images [N, 8, 8, 1] in [0, 1]
  y: jax.Array        # labels [N] int32
  clean_accuracy: float


def make_data(key, n, prototypes, noise=0.15):
  ky, kn = jax.random.split(key)
  y = jax.random.randint(ky, (n,), 0, NUM_CLASSES)
  x = prototypes[y] + noise * jax.random.normal(kn, (n,) + SHAPE)
  return jnp.clip(x, 0.0, 1.0), y.astype(jnp.int32)


def mlp_init(key, d=int(np.prod(SHAPE)), h=32, k=NUM_CLASSES):
  k1, k2 = jax.random.split(key)
  return {"w1": jax.random.normal(k1, (d, h)) / np.sqrt(d), "b1": jnp.zeros(h),
          "w2": jax.random.normal(k2, (h, k)) / np.sqrt(h), "b2": jnp.zeros(k)}


def mlp_apply(p, x):
  h = jax.nn.relu(x.reshape(x.shape[0], -1) @ p["w1"] + p["b1"])
  return h @ p["w2"] + p["b2"]


@pytest.fixture(scope="session")
def trained() -> Trained:
  key = jax.random.key(42)
  kp, ktr, kte, ki = jax.random.split(key, 4)
  prototypes = jax.random.uniform(kp, (NUM_CLASSES,) + SHAPE, minval=0.2, maxval=0.8)
  xtr, ytr = make_data(ktr, 512, prototypes)
  xte, yte = make_data(kte, 128, prototypes)
  params = mlp_init(ki)
  opt = optax.adam(1e-2)

  @jax.jit
  def train(params):
    def step(carry, _):
      p, s = carry
      g = jax.grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(
          mlp_apply(p, xtr), ytr).mean())(p)
      u, s = opt.update(g, s, p)
      return (optax.apply_updates(p, u), s), None
    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=200)
    return params

  params = train(params)
  logits_fn = jax.tree_util.Partial(mlp_apply, params)
  acc = float(jnp.mean(jnp.argmax(logits_fn(xte), 1) == yte))
  return Trained(logits_fn, xte, yte, acc)


def random_linear(d_in, k=NUM_CLASSES, seed=0):
  """A random linear classifier on flattened inputs of size d_in."""
  w = jax.random.normal(jax.random.key(seed), (d_in, k))

  def logits_fn(x):
    return x.reshape(x.shape[0], -1) @ w
  return logits_fn
