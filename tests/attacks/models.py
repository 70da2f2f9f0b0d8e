"""Tiny models for the attack tests: a random linear map and a small MLP."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

NUM_CLASSES = 5
SHAPE = (8, 8, 1)


def make_data(key, n, prototypes, noise=0.15):
  """n images [n, 8, 8, 1]: a class prototype plus Gaussian noise, clipped to [0, 1]."""
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


def random_linear(d_in, k=NUM_CLASSES, seed=0):
  """A random linear classifier on flattened inputs of size d_in."""
  w = jax.random.normal(jax.random.key(seed), (d_in, k))

  def logits_fn(x):
    return x.reshape(x.shape[0], -1) @ w
  return logits_fn
