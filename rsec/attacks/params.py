"""Parametrisations: how an attack's parameter u becomes an image.

A threat model is a parametrisation plus a norm-ball constraint on u (see threat.py). The
attack engine only ever calls the three functions below, so a new threat model (latent
space, true generator, deformation) is a new `Parametrisation`, never a new attack loop.

Convention: u = 0 is the unperturbed point (the clean image for pixels, z0 for a latent
parametrisation, the identity warp for deformations), and the norm ball is centred there.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp


class Parametrisation(NamedTuple):
  """Images as a differentiable function of a batched parameter u.

  to_image: (u, origin) -> x, images [B, ...]; differentiable in u.
  project:  (u, origin) -> u, onto the parametrisation's own feasible set (pixels: x0 + u
            in [lo, hi]; a latent box; theta ranges). It must map u = 0 to itself and move
            coordinates towards 0 only, so that it never leaves the norm ball it follows.
  zero:     origin -> u = 0 with the right shape [B, ...]; None means
            `jnp.zeros_like(origin)` (fine whenever origin is the array u lives next to).
  `origin` is any pytree of per-batch data (pixels: x0; latent: z0 and decoder params).
  """
  to_image: Callable[[jax.Array, Any], jax.Array]
  project: Callable[[jax.Array, Any], jax.Array]
  zero: Callable[[Any], jax.Array] | None = None


def zero_of(param: Parametrisation, origin: Any) -> jax.Array:
  """The unperturbed parameter u = 0 for this origin, shape [B, ...]."""
  return jnp.zeros_like(origin) if param.zero is None else param.zero(origin)


def pixel(lo: float = 0.0, hi: float = 1.0) -> Parametrisation:
  """x = clip(x0 + u, lo, hi), with u = delta in pixel units; origin = x0 [B, ...]."""

  def to_image(u: jax.Array, x0: jax.Array) -> jax.Array:
    return jnp.clip(x0 + u, lo, hi)

  def project(u: jax.Array, x0: jax.Array) -> jax.Array:
    return jnp.clip(x0 + u, lo, hi) - x0

  return Parametrisation(to_image, project)


def tanh_pixel(lo: float = 0.0, hi: float = 1.0) -> Parametrisation:
  """Carlini & Wagner's change of variables: x = lo + (hi - lo) (tanh(w0 + u) + 1) / 2.

  Unconstrained in u (project is the identity) yet always inside (lo, hi); origin = x0.
  w0 = atanh of x0 rescaled to (-1, 1), shrunk slightly so that saturated pixels stay
  finite, hence to_image(0, x0) equals x0 only up to about 1e-6 (hi - lo).
  """
  scale = hi - lo

  def w0_of(x0: jax.Array) -> jax.Array:
    s = jnp.clip(2.0 * (x0 - lo) / scale - 1.0, -1.0, 1.0) * (1.0 - 1e-6)
    return jnp.arctanh(s)

  def to_image(u: jax.Array, x0: jax.Array) -> jax.Array:
    x = lo + scale * (jnp.tanh(w0_of(x0) + u) + 1.0) / 2.0
    return jnp.clip(x, lo, hi)

  def project(u: jax.Array, x0: jax.Array) -> jax.Array:
    del x0
    return u

  return Parametrisation(to_image, project)
