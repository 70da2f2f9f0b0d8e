"""Shapes, colours and textures of SCENES things and stuff (pure JAX, per pixel).

Thing coordinates (u, v) are in units of half the object's height, centred on the
object's box: v = -1 at its top, v = 1 at its foot; u grows rightwards. A shape is a
signed distance (negative inside) in those units.
"""
from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np

# Per thing (scene_rules.THINGS order): height as a fraction of the image side at unit
# perspective scale, and width / height.
HEIGHTS = np.array([0.2, 0.32, 0.3, 0.42, 0.15, 0.26, 0.22, 0.18], np.float32)
ASPECTS = np.array([2.0, 0.4, 0.5, 0.75, 1.7, 0.6, 1.5, 1.0], np.float32)
PALETTES = np.array([
    [(0.85, 0.15, 0.12), (0.15, 0.3, 0.85), (0.95, 0.8, 0.1)],     # car
    [(0.9, 0.3, 0.6), (0.2, 0.7, 0.8), (0.95, 0.55, 0.1)],         # person
    [(0.95, 0.9, 0.1), (0.9, 0.15, 0.1), (0.95, 0.95, 0.95)],      # sign
    [(0.1, 0.4, 0.1), (0.2, 0.5, 0.1), (0.12, 0.33, 0.2)],         # tree
    [(0.55, 0.35, 0.15), (0.2, 0.17, 0.15), (0.85, 0.75, 0.55)],   # dog
    [(0.45, 0.25, 0.1), (0.2, 0.2, 0.6), (0.6, 0.1, 0.1)],         # chair
    [(0.35, 0.2, 0.08), (0.9, 0.9, 0.85), (0.25, 0.25, 0.25)],     # table
    [(0.1, 0.1, 0.1), (0.8, 0.2, 0.2), (0.2, 0.2, 0.7)],           # clock
], np.float32)
# A second colour on one part of some things (wheels, head, pole, trunk): (colour, v above).
_PART = np.array([(0.08, 0.08, 0.08), (0.92, 0.76, 0.62), (0.5, 0.5, 0.5), (0.4, 0.25, 0.1),
                  (0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0)], np.float32)
_PART_RANGE = np.array([(0.45, 9), (-9, -0.48), (-0.05, 9), (0.28, 9),
                        (9, 9), (9, 9), (9, 9), (9, 9)], np.float32)
_TEXTURE = np.array([0.1, 0.1, 0.05, 0.5, 0.35, 0.2, 0.2, 0.05], np.float32)
_STUFF_BASE = np.array([(0.55, 0.75, 0.95), (0.72, 0.55, 0.45), (0.68, 0.68, 0.66),
                        (0.3, 0.3, 0.32), (0.35, 0.62, 0.25), (0.62, 0.47, 0.3)], np.float32)


def _box(u, v, cx, cy, hx, hy, r=0.0):
  dx, dy = jnp.abs(u - cx) - (hx - r), jnp.abs(v - cy) - (hy - r)
  outside = jnp.sqrt(jnp.maximum(dx, 0) ** 2 + jnp.maximum(dy, 0) ** 2)
  return outside + jnp.minimum(jnp.maximum(dx, dy), 0) - r


def _circle(u, v, cx, cy, r):
  return jnp.sqrt((u - cx) ** 2 + (v - cy) ** 2) - r


def _union(*ds):
  return functools.reduce(jnp.minimum, ds)


def shape_sdf(cls: jnp.ndarray, u: jnp.ndarray, v: jnp.ndarray) -> jnp.ndarray:
  """Signed distance of thing class `cls` (scalar int) at (u, v) [H, W]."""
  au = jnp.abs(u)  # mirrored parts (wheels, legs)
  sdfs = [
      _union(_box(u, v, 0, 0.15, 1.9, 0.4, 0.12), _box(u, v, 0, -0.45, 1.0, 0.35, 0.1),
             _circle(au, v, 1.2, 0.65, 0.33)),                                   # car
      _union(_circle(u, v, 0, -0.72, 0.24), _box(u, v, 0, 0.25, 0.3, 0.72, 0.1)),  # person
      _union(_box(u, v, 0, 0.35, 0.06, 0.65), au + jnp.abs(v + 0.5) - 0.45),       # sign
      _union(_circle(u, v, 0, -0.3, 0.68), _box(u, v, 0, 0.6, 0.13, 0.4)),         # tree
      _union(_box(u, v, -0.1, 0.05, 0.95, 0.35, 0.15), _circle(u, v, 1.15, -0.4, 0.38),
             _box(au, v, 0.7, 0.65, 0.13, 0.35), _box(u, v, -1.15, -0.3, 0.1, 0.3)),  # dog
      _union(_box(u, v, -0.42, -0.45, 0.12, 0.55), _box(u, v, 0, 0.05, 0.55, 0.1),
             _box(au, v, 0.45, 0.55, 0.08, 0.45)),                               # chair
      _union(_box(u, v, 0, -0.55, 1.5, 0.14), _box(au, v, 1.2, 0.3, 0.12, 0.7)),  # table
      _union(jnp.abs(jnp.sqrt(u ** 2 + v ** 2) - 0.75) - 0.2, _box(u, v, 0, -0.25, 0.06, 0.3),
             _box(u, v, 0.2, 0, 0.25, 0.06)),                                    # clock
  ]
  return jnp.stack(sdfs)[cls]


def thing_colour(cls, colour, u, v, noise) -> jnp.ndarray:
  """RGB [H, W, 3] of a thing: its colour, a coloured part, shading and texture."""
  lo, hi = jnp.asarray(_PART_RANGE)[cls]
  part = (v > lo) & (v < hi)
  base = jnp.where(part[..., None], jnp.asarray(_PART)[cls], colour)
  shade = 0.9 - 0.12 * v + jnp.asarray(_TEXTURE)[cls] * (noise - 0.5)
  return jnp.clip(base * shade[..., None], 0, 1)


def stuff_colours(x, y, noise, edges, tint, markings=True) -> jnp.ndarray:
  """RGB [len(STUFF), H, W, 3] of every stuff texture at every pixel.

  edges: [3, H, W] band boundaries (y of each) at every pixel column. markings: bool scalar,
  draw the road's lane markings (they mark the middle of the road band, so a road that
  shares its look with another stuff goes without them).
  """
  base = jnp.asarray(_STUFF_BASE) + tint                       # [6, 3]
  frac = lambda t: t - jnp.floor(t)
  ones = jnp.ones_like(x)
  sky = (0.85 + 0.3 * y)
  row = jnp.floor(y * 16)
  wall = jnp.where((frac(y * 16) < 0.15) | (frac(x * 8 + 0.5 * row) < 0.08), 0.75, 1.0)
  walk = jnp.where((frac(x * 10) < 0.1) | (frac(y * 12) < 0.1), 0.8, 1.0)
  road = 1.0 + 0.3 * (noise - 0.5)
  grass = 0.8 + 0.4 * noise
  floor = jnp.where(frac(x * 7) < 0.07, 0.7, 1.0) + 0.15 * (noise - 0.5)
  scale = jnp.stack([sky, wall, walk, road, grass, floor])      # [6, H, W]
  out = base[:, None, None, :] * scale[..., None] * ones[None, ..., None]
  lane = (jnp.abs(y - (edges[2] + 1) / 2) < 0.015) & (frac(x * 4) < 0.5)
  if markings is not True:     # the default path stays exactly as it was
    lane = lane & markings
  out = out.at[3].set(jnp.where(lane[..., None], jnp.array([0.95, 0.95, 0.9]), out[3]))
  return jnp.clip(out, 0, 1)
