"""Threat-model constraints on a batched parameter u: norms, ball projections, initialisers.

Every function here acts per example on an array u of shape [B, ...] (leading batch axis)
and accepts a radius `eps` that is either a scalar or one radius per example, shape [B].
Norms are taken over all non-batch axes of u, in the units of u (pixel intensities for the
pixel parametrisation, latent units for a latent one, and so on).

`norm="box"` means no norm ball at all: u is constrained only by the parametrisation's own
box (deformation ranges, say); `eps` then only sets the scale of random initialisations.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from rsec.registry import Registry

NORMS = ("linf", "l2", "l1", "box")
_TINY = 1e-12

InitFn = Callable[[jax.Array, jax.Array, str, jax.Array], jax.Array]
INITS: Registry[InitFn] = Registry("init")


def per_example(v: jax.Array | float, like: jax.Array) -> jax.Array:
  """Reshapes a scalar or [B] array so it broadcasts against `like` ([B, ...])."""
  v = jnp.asarray(v, dtype=like.dtype)
  return v.reshape(v.shape + (1,) * (like.ndim - v.ndim)) if v.ndim else v


def flat(u: jax.Array) -> jax.Array:
  """[B, ...] -> [B, D]."""
  return u.reshape(u.shape[0], -1)


def norm(u: jax.Array, p: str) -> jax.Array:
  """Per-example norm of u [B, ...] -> [B]; p in NORMS ("box" is measured as L-inf)."""
  a = jnp.abs(flat(u))
  if p in ("linf", "box"):
    return jnp.max(a, axis=1)
  if p == "l2":
    return jnp.sqrt(jnp.sum(a * a, axis=1))
  if p == "l1":
    return jnp.sum(a, axis=1)
  raise ValueError(f"unknown norm {p!r}; expected one of {list(NORMS)}")


def project_linf(u: jax.Array, eps: jax.Array | float) -> jax.Array:
  e = per_example(eps, u)
  return jnp.clip(u, -e, e)


def project_l2(u: jax.Array, eps: jax.Array | float) -> jax.Array:
  n = per_example(norm(u, "l2"), u)
  e = per_example(eps, u)
  return u * jnp.minimum(1.0, e / jnp.maximum(n, _TINY))


def project_l1(u: jax.Array, eps: jax.Array | float) -> jax.Array:
  """Exact Euclidean projection onto the L1 ball (Duchi et al. 2008, sort-based).

  Soft-thresholds |u| at the theta that makes the L1 norm exactly eps; points already
  inside the ball are returned unchanged. O(D log D) per example.
  """
  v = flat(u)
  a = jnp.abs(v)
  e = jnp.broadcast_to(jnp.asarray(eps, v.dtype), (v.shape[0],))[:, None]
  mu = -jnp.sort(-a, axis=1)
  cs = jnp.cumsum(mu, axis=1)
  j = jnp.arange(1, v.shape[1] + 1, dtype=v.dtype)
  active = mu - (cs - e) / j > 0
  # rho = largest active index; at least 1 so eps = 0 thresholds at max|u| (result 0).
  rho = jnp.maximum(jnp.max(jnp.where(active, jnp.arange(1, v.shape[1] + 1), 0), axis=1), 1)
  theta = (jnp.take_along_axis(cs, (rho - 1)[:, None], axis=1) - e) / rho[:, None]
  w = jnp.sign(v) * jnp.maximum(a - theta, 0.0)
  inside = jnp.sum(a, axis=1, keepdims=True) <= e
  return jnp.where(inside, v, w).reshape(u.shape)


def project_ball(u: jax.Array, p: str, eps: jax.Array | float) -> jax.Array:
  """Projects each example of u onto its eps-ball in norm p ("box": identity)."""
  if p == "linf":
    return project_linf(u, eps)
  if p == "l2":
    return project_l2(u, eps)
  if p == "l1":
    return project_l1(u, eps)
  if p == "box":
    return u
  raise ValueError(f"unknown norm {p!r}; expected one of {list(NORMS)}")


def unit_direction(key: jax.Array, like: jax.Array, p: str) -> jax.Array:
  """A random direction with unit p-norm per example, same shape/dtype as `like`."""
  shape, dtype = like.shape, like.dtype
  if p in ("linf", "box"):
    v = jax.random.uniform(key, shape, dtype, -1.0, 1.0)
  elif p == "l2":
    v = jax.random.normal(key, shape, dtype)
  elif p == "l1":
    k1, k2 = jax.random.split(key)
    v = jax.random.exponential(k1, shape, dtype) * jax.random.rademacher(k2, shape, dtype)
  else:
    raise ValueError(f"unknown norm {p!r}; expected one of {list(NORMS)}")
  return v / jnp.maximum(per_example(norm(v, p), v), _TINY)


@INITS.register("zero")
def init_zero(key: jax.Array, u0: jax.Array, p: str, eps: jax.Array) -> jax.Array:
  """Starts at u0 (the unperturbed parameter)."""
  del key, p, eps
  return u0


@INITS.register("uniform")
def init_uniform(key: jax.Array, u0: jax.Array, p: str, eps: jax.Array) -> jax.Array:
  """u0 plus a sample uniform (in volume) in the eps-ball of norm p.

  L-inf/box: uniform in the cube. L2: Gaussian direction times eps * U^(1/D). L1: D+1
  exponentials normalised by their sum give a uniform point of the corner simplex
  {x >= 0, sum x <= 1}; random signs make it uniform in the cross-polytope.
  """
  e = per_example(eps, u0)
  d = flat(u0).shape[1]
  if p in ("linf", "box"):
    return u0 + e * jax.random.uniform(key, u0.shape, u0.dtype, -1.0, 1.0)
  k1, k2 = jax.random.split(key)
  if p == "l2":
    r = jax.random.uniform(k2, (u0.shape[0],), u0.dtype) ** (1.0 / d)
    return u0 + e * per_example(r, u0) * unit_direction(k1, u0, "l2")
  if p == "l1":
    ex = jax.random.exponential(k1, (u0.shape[0], d + 1), u0.dtype)
    pos = ex[:, :d] / jnp.sum(ex, axis=1, keepdims=True)
    sign = jax.random.rademacher(k2, pos.shape, u0.dtype)
    return u0 + e * (sign * pos).reshape(u0.shape)
  raise ValueError(f"unknown norm {p!r}; expected one of {list(NORMS)}")


@INITS.register("random_direction")
def init_random_direction(key: jax.Array, u0: jax.Array, p: str, eps: jax.Array) -> jax.Array:
  """Stutz et al.'s init: a random unit-norm direction scaled by eps * U(0, 1)."""
  k1, k2 = jax.random.split(key)
  r = jax.random.uniform(k2, (u0.shape[0],), u0.dtype)
  return u0 + per_example(eps, u0) * per_example(r, u0) * unit_direction(k1, u0, p)
