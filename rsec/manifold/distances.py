"""Distances to manifolds: projections by the attack engine, NN+PCA, tangent angles.

The projection of x_tilde onto a manifold {x(u)} is `run_attack` *minimising*
||x(u) - x_tilde||_2^2 (loss = minus it, select = max_loss, restarts from random points of
the parametrisation's box), so the true (FONTS generator) and learned (decoder) manifolds
use exactly the parametrisations the on-manifold attacks use. Distances are L2 in pixels.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from rsec.attacks.engine import run_attack
from rsec.attacks.steps import STEPS
from rsec.attacks.threat import flat
from rsec.data import warp
from rsec.manifold import parametrisations


def _closest(param, origin, target: jax.Array, key: jax.Array, init: Callable, *,
             steps: int, restarts: int, lr: float) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(u*, x(u*), ||x(u*) - target||_2 [B]) minimising the distance over u with Adam."""
  t = flat(target)
  logits_fn = lambda x: flat(x) - t  # "logits" = residual; the loss reads only these
  loss = lambda r, y, tgt: -jnp.sum(r * r, axis=1)
  y = jnp.zeros((target.shape[0],), jnp.int32)
  u, x, _ = run_attack(logits_fn, key, origin, y, param, norm="box", eps=1.0,
                       step=STEPS.get("adam")("box", steps, {"step_size": lr}), loss=loss,
                       steps=steps, restarts=restarts, init=init, select="max_loss")
  return u, x, jnp.sqrt(jnp.sum(flat(x - target) ** 2, axis=1))


def _uniform_in(low: jax.Array, high: jax.Array, centre: jax.Array):
  """An engine init drawing u so that centre + u is uniform in [low, high]."""
  def init(key, u0, p, eps):
    del p, eps
    return jax.random.uniform(key, u0.shape, u0.dtype, low, high) - centre
  return init


def project_true(key: jax.Array, x_tilde: jax.Array, font: jax.Array, char: jax.Array,
                 prototype_images: jax.Array, low, high, *, steps: int = 200,
                 restarts: int = 20, lr: float = 0.1
                 ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Projects x_tilde [B, H, W, 1] onto FONTS with font and character fixed, over theta.

  Restart 0 starts at the centre of [low, high]; the others uniformly in it. The defaults
  brought 32 FONTS-hard test images back to within 0.042 (L2, pixels in [0, 1]) of
  themselves; 100 steps x 5 restarts at lr 0.05 left 9% of them above 0.5 (local minima).
  Returns (theta* [B, 6], render(theta*) [B, H, W, 1], distance [B]).
  """
  low, high = (jnp.asarray(a, jnp.float32) for a in (low, high))
  centre = jnp.broadcast_to((low + high) / 2, (x_tilde.shape[0], 6))
  param = parametrisations.true_manifold(prototype_images, low, high)
  origin = parametrisations.true_origin(font, char, centre)
  k0, k1 = jax.random.split(key)
  outs = [_closest(param, origin, x_tilde, k0, "zero", steps=steps, restarts=1, lr=lr)]
  if restarts > 1:
    outs.append(_closest(param, origin, x_tilde, k1, _uniform_in(low, high, centre),
                         steps=steps, restarts=restarts - 1, lr=lr))
  best = outs[0] if len(outs) == 1 else jax.tree.map(
      lambda a, b: jnp.where((outs[1][2] < outs[0][2]).reshape((-1,) + (1,) * (a.ndim - 1)),
                             b, a), outs[0], outs[1])
  u, x, d = best
  return centre + u, x, d


def project_true_all_fonts(key: jax.Array, x_tilde: jax.Array, char: jax.Array,
                           prototype_images: jax.Array, low, high, **kwargs
                           ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """`project_true` over every font of the class, keeping the closest:
  (font* [B], theta* [B, 6], distance [B]). Fonts run one after another (lax.map)."""
  num_fonts = prototype_images.shape[0]
  b = x_tilde.shape[0]

  def one(f):
    theta, _, d = project_true(jax.random.fold_in(key, f), x_tilde, jnp.full((b,), f),
                               char, prototype_images, low, high, **kwargs)
    return theta, d

  thetas, ds = jax.lax.map(one, jnp.arange(num_fonts))
  best = jnp.argmin(ds, axis=0)
  return best, thetas[best, jnp.arange(b)], ds[best, jnp.arange(b)]


def project_learned(key: jax.Array, x_tilde: jax.Array, cls: jax.Array, decode: Callable,
                    z_start: jax.Array, *, bound: float = 2.0, steps: int = 200,
                    restarts: int = 10, lr: float = 0.05
                    ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Projects x_tilde onto the class decoder's image of [-bound, bound]^d, over z.

  Restart 0 starts at z_start [B, d] (e.g. the encoder's mu(x_tilde)), the others uniformly
  in the box. Returns (z* [B, d], decode(z*) [B, H, W, C], distance [B]).
  """
  param = parametrisations.learned_manifold(decode)
  origin = parametrisations.learned_origin(z_start, cls, -bound, bound)
  k0, k1 = jax.random.split(key)
  outs = [_closest(param, origin, x_tilde, k0, "zero", steps=steps, restarts=1, lr=lr)]
  if restarts > 1:
    outs.append(_closest(param, origin, x_tilde, k1,
                         _uniform_in(-bound, bound, origin["z0"]), steps=steps,
                         restarts=restarts - 1, lr=lr))
  best = outs[0] if len(outs) == 1 else jax.tree.map(
      lambda a, b: jnp.where((outs[1][2] < outs[0][2]).reshape((-1,) + (1,) * (a.ndim - 1)),
                             b, a), outs[0], outs[1])
  u, x, d = best
  return origin["z0"] + u, x, d


class PCANeighbours:
  """The local NN+PCA manifold: PCA (n_components) of the training images for the
  neighbour search; the residual is taken in pixel space against the span of the k
  nearest training images."""

  def __init__(self, train_images: np.ndarray, n_components: int = 40, k: int = 50):
    x = np.asarray(train_images, np.float32).reshape(len(train_images), -1)
    if not 1 <= n_components <= min(x.shape):
      raise ValueError(f"n_components must be in [1, {min(x.shape)}], got {n_components}")
    if not 1 <= k <= len(x):
      raise ValueError(f"k must be in [1, {len(x)}] (the training set size), got {k}")
    self.mean = x.mean(0)
    _, _, vt = np.linalg.svd(x - self.mean, full_matrices=False)
    self.basis = vt[:n_components].T                 # [D, n_components]
    self.codes = (x - self.mean) @ self.basis        # [N, n_components]
    self.train, self.k = x, k

  def distance(self, x_tilde: np.ndarray) -> np.ndarray:
    """||x - P_span(NN_k(x)) x||_2 per image: x_tilde [B, ...] -> [B]."""
    q = np.asarray(x_tilde, np.float32).reshape(len(x_tilde), -1)
    codes = (q - self.mean) @ self.basis
    d2 = (np.sum(codes ** 2, 1)[:, None] - 2 * codes @ self.codes.T
          + np.sum(self.codes ** 2, 1)[None])
    nn = np.argsort(d2, axis=1)[:, :self.k]
    return np.asarray(_span_residual(jnp.asarray(self.train[nn]), jnp.asarray(q)))


@jax.jit
def _span_residual(neighbours: jax.Array, q: jax.Array) -> jax.Array:
  """neighbours [B, k, D], q [B, D] -> ||q - QQ^T q|| [B], Q an orthonormal basis of the span."""
  def one(nb, x):
    u, s, _ = jnp.linalg.svd(nb.T, full_matrices=False)
    keep = s > s[0] * 1e-5
    proj = u @ (jnp.where(keep, u.T @ x, 0.0))
    return jnp.linalg.norm(x - proj)
  return jax.vmap(one)(neighbours, q)


def tangent_fraction(prototype_images: jax.Array, font: jax.Array, char: jax.Array,
                     theta0: jax.Array, delta: jax.Array) -> jax.Array:
  """Fraction of ||delta|| orthogonal to the FONTS tangent space at theta0.

  The tangent space is spanned by the columns of d render / d theta at theta0 (6 of them).
  font, char [B]; theta0 [B, 6]; delta [B, H, W, ...] -> [B] in [0, 1] (0: along it).
  """
  prototype_images = jnp.asarray(prototype_images)

  def one(f, c, th, d):
    jac = jax.jacfwd(lambda t: warp.warp_single(
        prototype_images[f, c], warp.theta_to_affine(t)).reshape(-1))(th)   # [D, 6]
    u, s, _ = jnp.linalg.svd(jac, full_matrices=False)
    keep = s > jnp.max(s) * 1e-6
    v = d.reshape(-1)
    proj = u @ jnp.where(keep, u.T @ v, 0.0)
    return jnp.linalg.norm(v - proj) / jnp.maximum(jnp.linalg.norm(v), 1e-12)
  return jax.vmap(one)(jnp.asarray(font), jnp.asarray(char), jnp.asarray(theta0), delta)
