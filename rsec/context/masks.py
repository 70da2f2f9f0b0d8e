"""Hole masks, naive fills and hole PSNR for in-painting (pure JAX).

Masks are float32 [B, H, W] (1 = hole) unless a trailing channel axis is named.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from rsec.models.inpainter import diffusion_fill


def dilate(m: jax.Array, radius: int) -> jax.Array:
  """Max-filter of [B, H, W] masks with a (2r+1) square (r = 0: unchanged)."""
  if radius <= 0:
    return m
  k = 2 * radius + 1
  return jax.lax.reduce_window(m, -jnp.inf, jax.lax.max, (1, k, k), (1, 1, 1),
                               ((0, 0), (radius, radius), (radius, radius)))


def random_boxes(key: jax.Array, batch: int, size: int, lo: float = 0.15,
                 hi: float = 0.45) -> jax.Array:
  """One axis-aligned box per image, sides uniform in [lo, hi] of the image side."""
  k1, k2 = jax.random.split(key)
  wh = jax.random.uniform(k1, (batch, 2), minval=lo, maxval=hi)
  xy = jax.random.uniform(k2, (batch, 2)) * (1 - wh)
  px = (jnp.arange(size) + 0.5) / size
  inx = (px[None] >= xy[:, :1]) & (px[None] <= xy[:, :1] + wh[:, :1])
  iny = (px[None] >= xy[:, 1:]) & (px[None] <= xy[:, 1:] + wh[:, 1:])
  return (iny[:, :, None] & inx[:, None, :]).astype(jnp.float32)


def random_blobs(key: jax.Array, batch: int, size: int, parts: int = 3) -> jax.Array:
  """Unions of `parts` discs (radius 0.06-0.16) scattered around a random centre."""
  k1, k2, k3 = jax.random.split(key, 3)
  centre = jax.random.uniform(k1, (batch, 1, 2), minval=0.2, maxval=0.8)
  offs = jax.random.uniform(k2, (batch, parts, 2), minval=-0.12, maxval=0.12)
  r = jax.random.uniform(k3, (batch, parts), minval=0.06, maxval=0.16)
  px = (jnp.arange(size) + 0.5) / size
  c = centre + offs                                                    # [B, P, 2]
  d2 = (px[None, None, :, None] - c[..., 1, None, None]) ** 2 + \
       (px[None, None, None, :] - c[..., 0, None, None]) ** 2          # [B, P, H, W]
  return jnp.any(d2 <= r[..., None, None] ** 2, axis=1).astype(jnp.float32)


def pick_object_masks(key: jax.Array, masks: jax.Array, shown: jax.Array) -> jax.Array:
  """One shown object's mask per image ([B, S, H, W] -> [B, H, W]); zeros if none."""
  logits = jnp.where(shown, 0.0, -1e9)
  s = jax.random.categorical(key, logits)
  m = jnp.take_along_axis(masks, s[:, None, None, None], 1)[:, 0].astype(jnp.float32)
  return m * shown.any(1)[:, None, None]


def training_holes(key: jax.Array, masks: jax.Array, shown: jax.Array, size: int,
                   object_fraction: float = 0.5, dilation: int = 2) -> jax.Array:
  """Hole masks for training an in-painter whose targets are known.

  Half (by `object_fraction`) are object silhouettes taken from *another* image of the
  batch (rolled by one) and dilated, so they cover arbitrary content of this image;
  the rest are random boxes or blobs. Returns float32 [B, H, W].
  """
  b = masks.shape[0]
  ks = jax.random.split(key, 4)
  obj = dilate(pick_object_masks(ks[0], jnp.roll(masks, 1, 0), jnp.roll(shown, 1, 0)),
               dilation)
  box, blob = random_boxes(ks[1], b, size), random_blobs(ks[2], b, size)
  u = jax.random.uniform(ks[3], (b, 1, 1))
  rnd = jnp.where(u < (1 + object_fraction) / 2, box, blob)
  out = jnp.where((u < object_fraction) & (obj.sum((1, 2), keepdims=True) > 0), obj, rnd)
  return out


def mean_fill(x: jax.Array, m: jax.Array) -> jax.Array:
  """Fills the hole (m [B, H, W]) with the mean colour of the known pixels."""
  known = (1 - m)[..., None]
  mean = (x * known).sum((1, 2), keepdims=True) / jnp.maximum(known.sum((1, 2), keepdims=True), 1)
  return x * known + mean * (1 - known)


def blur_fill(x: jax.Array, m: jax.Array, iters: int = 200) -> jax.Array:
  """Diffusion fill: repeated 3x3 box blurs, known pixels reset after each (harmonic)."""
  return diffusion_fill(x, m[..., None], iters)


def hole_squared_error(pred: jax.Array, target: jax.Array, m: jax.Array) -> tuple:
  """(sum of squared errors over hole pixels, number of hole pixels), each [B].

  Pool these over a data set for its PSNR: a mean of per-image PSNRs is dominated by
  flat holes that a blur fills almost exactly (tens of dB), whatever happens elsewhere.
  """
  return (((pred - target) ** 2).mean(-1) * m).sum((1, 2)), m.sum((1, 2))


def psnr_in_hole(pred: jax.Array, target: jax.Array, m: jax.Array) -> jax.Array:
  """Per-image PSNR (dB, peak 1) over hole pixels; pred/target [B, H, W, 3], m [B, H, W]."""
  se = ((pred - target) ** 2).mean(-1) * m
  mse = se.sum((1, 2)) / jnp.maximum(m.sum((1, 2)), 1)
  return -10 * jnp.log10(jnp.maximum(mse, 1e-10))
