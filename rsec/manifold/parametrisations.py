"""On-manifold and deformation threat models as engine parametrisations, and the paper's
success rules.

| name            | u            | x(u)                                  | own box (project)          |
| learned_manifold| zeta [B, d]  | decode(z0 + zeta, cls)                | z in [low, high] (encoded) |
| true_manifold   | zeta [B, 6]  | render(font, char, theta0 + zeta)     | theta in the data ranges   |
| deformation     | theta - id   | warp(x0, id + u)                      | theta in configured ranges |
The norm ball (L-inf eta = 0.3 in the paper) is the engine's `norm`/`eps`; these functions
only add the parametrisation's own box, so `run_attack` does the rest.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from rsec.attacks.params import Parametrisation
from rsec.data import warp

IDENTITY = np.asarray(warp.IDENTITY_THETA, np.float32)  # NumPy: importing starts no backend


def _box(low, high) -> tuple[jax.Array, jax.Array]:
  low, high = jnp.asarray(low, jnp.float32), jnp.asarray(high, jnp.float32)
  if not isinstance(low, jax.core.Tracer) and bool(jnp.any(low > high)):
    raise ValueError(f"box low must be <= high elementwise, got low={low}, high={high}")
  return low, high


def learned_manifold(decode: Callable[[jax.Array, jax.Array], jax.Array]) -> Parametrisation:
  """Latent attack on class decoders. origin = dict(z0 [B, d], cls [B] int, low, high), with
  low/high the latent box ([d] or [B, d]; the paper: the box of encoded training latents).
  decode(z [B, d], cls [B]) -> images [B, H, W, C] (e.g. `learned.class_decoder`)."""

  def to_image(u, o):
    return decode(o["z0"] + u, o["cls"])

  def project(u, o):
    return jnp.clip(o["z0"] + u, o["low"], o["high"]) - o["z0"]

  return Parametrisation(to_image, project, zero=lambda o: jnp.zeros_like(o["z0"]))


def learned_origin(z0: jax.Array, cls: jax.Array, low, high) -> dict:
  """origin for `learned_manifold`; z0 is clipped into the box so that u = 0 is feasible."""
  low, high = _box(low, high)
  return {"z0": jnp.clip(z0, low, high), "cls": jnp.asarray(cls, jnp.int32),
          "low": low, "high": high}


def true_manifold(prototype_images: jax.Array, low, high) -> Parametrisation:
  """FONTS generator attack. origin = dict(font [B], char [B], theta0 [B, 6]); u = zeta on
  raw theta; theta0 + zeta clipped to [low, high] ([6], e.g. `theta_range('hard')`).
  Images [B, H, W, 1]."""
  low, high = _box(low, high)

  def to_image(u, o):
    return warp.render_batch(prototype_images, o["font"], o["char"], o["theta0"] + u)[..., None]

  def project(u, o):
    return jnp.clip(o["theta0"] + u, low, high) - o["theta0"]

  return Parametrisation(to_image, project, zero=lambda o: jnp.zeros_like(o["theta0"]))


def true_origin(font, char, theta0, low=None, high=None) -> dict:
  """origin for `true_manifold` (theta0 clipped into [low, high] when given)."""
  theta0 = jnp.asarray(theta0, jnp.float32)
  if low is not None:
    theta0 = jnp.clip(theta0, *_box(low, high))
  return {"font": jnp.asarray(font, jnp.int32), "char": jnp.asarray(char, jnp.int32),
          "theta0": theta0}


def warp_images(x: jax.Array, theta: jax.Array) -> jax.Array:
  """x [B, H, W, C] warped by theta [B, 6] (every channel alike) -> [B, H, W, C]."""
  aff = warp.theta_to_affine(theta).astype(x.dtype)
  chans = jnp.moveaxis(x, -1, 1)  # [B, C, H, W]
  out = warp.affine_warp(chans, jnp.broadcast_to(aff[:, None], chans.shape[:2] + (2, 3)))
  return jnp.moveaxis(out, 1, -1)


def deformation(low, high) -> Parametrisation:
  """Spatial-transformer attack. origin = x0 [B, H, W, C]; u [B, 6] = theta - identity,
  theta kept in [low, high] ([6], must contain the identity)."""
  low, high = _box(low, high)
  if not isinstance(low, jax.core.Tracer) and not bool(
      jnp.all((low <= IDENTITY) & (IDENTITY <= high))):
    raise ValueError(f"deformation ranges must contain the identity {IDENTITY}, got "
                     f"low={low}, high={high}")

  def to_image(u, x0):
    return warp_images(x0, IDENTITY + u)

  def project(u, x0):
    del x0
    return jnp.clip(IDENTITY + u, low, high) - IDENTITY

  return Parametrisation(to_image, project,
                         zero=lambda x0: jnp.zeros((x0.shape[0], 6), x0.dtype))


def deformation_ranges(eps: float) -> tuple[np.ndarray, np.ndarray]:
  """The box identity +- eps on every theta component: (low [6], high [6])."""
  return warp.IDENTITY_THETA - eps, warp.IDENTITY_THETA + eps


def on_manifold_success(info: dict, clean_correct: jax.Array,
                        z: jax.Array | None = None, bound: float = 2.0) -> jax.Array:
  """The paper's rule: an on-manifold attack counts only where the classifier is correct on
  the unperturbed on-manifold image (dec(z0) or render(theta0)), and, for latent attacks
  (z given, [B, d]), the final z lies in [-bound, bound]^d. Returns [B] bool."""
  ok = info["success"] & clean_correct
  if z is not None:
    ok = ok & jnp.all(jnp.abs(z) <= bound + 1e-6, axis=-1)
  return ok
