"""Query pools for model stealing: what an attacker can send a FONTS victim.

A `QueryPool` is a fixed, seeded set of images [N, H, W, C] in [0, 1] with a two-level
class hierarchy (coarse -> fine) that the adaptive knockoff strategy explores. Pools are
rebuilt from their name, size and seed (nothing is downloaded), so a transfer set is
stored as pool indices. The attacker never sees the victim's training images: glyph
pools use other data-set seeds and splits than the victim's data.

| name | images | hierarchy (coarse / fine) |
| --- | --- | --- |
| `same` | FONTS of the victim's characters, its difficulty (an upper reference) | one node / the character |
| `natural` | FONTS A-Z, a-z, 0-9 in every font with all 62 glyphs, a third each easy / moderate / hard | upper / lower / digit / the character |
| `natural_disjoint` | `natural` without the victim's characters | as `natural` |
| `scenes` | grey-scale crops (half to all of the side) of SCENES images, resized | one node / the scene's largest thing class |
| `noise` | uniform [0, 1] and Gaussian (mean 0.5, sigma 0.1 / 0.2 / 0.35, clipped) | uniform / Gaussian / the distribution |
"""
from __future__ import annotations

import dataclasses
import string
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from rsec.checks import check_positive_int
from rsec.registry import Registry

NATURAL_CHARACTERS = string.ascii_uppercase + string.ascii_lowercase + string.digits
DIFFICULTIES = ("easy", "moderate", "hard")
NOISE_SIGMAS = (0.1, 0.2, 0.35)


@dataclasses.dataclass(frozen=True)
class QueryPool:
  """images [N, H, W, C] float32 in [0, 1]; fine [N] int32 leaf of each image; parent [F]
  int32 coarse node of each leaf; names of the coarse nodes and of the leaves."""
  name: str
  images: np.ndarray
  fine: np.ndarray
  parent: np.ndarray
  coarse_names: tuple[str, ...]
  fine_names: tuple[str, ...]

  def __len__(self) -> int:
    return len(self.images)

  @property
  def coarse(self) -> np.ndarray:
    return self.parent[self.fine]


POOLS: Registry[Callable[..., QueryPool]] = Registry("query set")


def build_pool(name: str, size: int, seed: int, data: ml_collections.ConfigDict) -> QueryPool:
  """The pool `name` of `size` images from `seed`, shaped like the victim's FONTS `data`
  block (its characters, size, difficulty and fonts)."""
  size = check_positive_int("pool size", size)
  pool = POOLS.get(name)(size, seed, data)
  assert pool.images.shape[0] == size and pool.images.dtype == np.float32
  return pool


def _glyphs(characters: str, n: int, seed: int, data, difficulty: str, split: str):
  from rsec.data.fonts_dataset import fonts_split
  from rsec.data.sources import load_prototypes_from_config
  c = ml_collections.ConfigDict(data.to_dict())
  c.characters = characters
  protos = load_prototypes_from_config(c)
  out = fonts_split(protos, split, n, seed=seed, difficulty=difficulty)
  return np.asarray(out["image"], np.float32), np.asarray(out["label"], np.int32)


def _by_difficulty(characters: str, n: int, seed: int, data) -> tuple[np.ndarray, np.ndarray]:
  """n glyph images, a third of each difficulty preset, shuffled by `seed`."""
  parts = np.array_split(np.arange(n), len(DIFFICULTIES))
  xs, ys = zip(*(_glyphs(characters, len(p), seed + 7 * i, data, d, "validation")
                 for i, (p, d) in enumerate(zip(parts, DIFFICULTIES)) if len(p)))
  order = np.random.default_rng([seed, 0x9A7]).permutation(n)
  return np.concatenate(xs)[order], np.concatenate(ys)[order]


def _character_tree(characters: str) -> tuple[np.ndarray, tuple[str, ...]]:
  kinds = ("upper", "lower", "digit")
  kind = lambda ch: 0 if ch.isupper() else 1 if ch.islower() else 2
  present = sorted({kind(ch) for ch in characters})
  parent = np.array([present.index(kind(ch)) for ch in characters], np.int32)
  return parent, tuple(kinds[k] for k in present)


@POOLS.register("same")
def _same(size: int, seed: int, data) -> QueryPool:
  # The victim's distribution, from the 'validation' split: its train and test splits
  # come from other keys, so none of these images is one the victim saw.
  x, y = _glyphs(data.characters, size, seed, data, data.difficulty, "validation")
  return QueryPool("same", x, y, np.zeros(len(data.characters), np.int32), ("all",),
                   tuple(data.characters))


def _natural(size: int, seed: int, data, exclude: str = "") -> QueryPool:
  chars = "".join(ch for ch in NATURAL_CHARACTERS if ch not in exclude)
  x, y = _by_difficulty(chars, size, seed, data)
  parent, coarse = _character_tree(chars)
  return QueryPool("natural_disjoint" if exclude else "natural", x, y, parent, coarse,
                   tuple(chars))


POOLS.register("natural")(_natural)
POOLS.register("natural_disjoint")(
    lambda size, seed, data: _natural(size, seed, data, exclude=data.characters))


@POOLS.register("scenes")
def _scenes(size: int, seed: int, data) -> QueryPool:
  from rsec.data.scenes import scene_split
  from rsec.data.scene_rules import ContextRules, THINGS
  scenes = scene_split("train", size, seed=seed, rules=ContextRules(), size=64)
  grey = np.asarray(scenes["image"], np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
  rng = np.random.default_rng([seed, 0x5CE])
  side = rng.integers(32, 65, size)
  y0, x0 = rng.integers(0, 65 - side), rng.integers(0, 65 - side)
  images = _crop_resize(grey, y0, x0, side, data.size)
  # The leaf of a scene: its largest visible thing class (scenes without one: 'none').
  area = np.asarray(scenes["masks"]).sum(axis=(2, 3))                  # [N, S]
  cls = np.asarray(scenes["layout"]["cls"])                             # [N, S]
  top = np.where(area.max(1) > 0, cls[np.arange(size), area.argmax(1)], len(THINGS))
  names = tuple(THINGS) + ("none",)
  return QueryPool("scenes", images[..., None], top.astype(np.int32),
                   np.zeros(len(names), np.int32), ("all",), names)


def _crop_resize(grey: np.ndarray, y0, x0, side, out: int) -> np.ndarray:
  """Square crops [y0, y0 + side) x [x0, x0 + side) of [N, 64, 64] images resized to
  out x out by bilinear sampling (a fixed-shape formulation: one compile for all sides)."""
  def one(img, y, x, s):
    t = (jnp.arange(out, dtype=jnp.float32) + 0.5) / out * s - 0.5
    ys, xs = jnp.clip(y + t, 0, 63), jnp.clip(x + t, 0, 63)
    return jax.scipy.ndimage.map_coordinates(
        img, jnp.meshgrid(ys, xs, indexing="ij"), order=1, mode="nearest")
  fn = jax.jit(jax.vmap(one))
  f = lambda a: np.asarray(a, np.float32)
  return np.clip(np.asarray(fn(f(grey), f(y0), f(x0), f(side))), 0.0, 1.0)


@POOLS.register("noise")
def _noise(size: int, seed: int, data) -> QueryPool:
  rng = np.random.default_rng([seed, 0x401])
  shape = (data.size, data.size, 1)
  leaf = rng.integers(0, 1 + len(NOISE_SIGMAS), size).astype(np.int32)
  sigma = np.array((0.0,) + NOISE_SIGMAS, np.float32)[leaf]
  gauss = 0.5 + sigma[:, None, None, None] * rng.standard_normal((size,) + shape, np.float32)
  uniform = rng.random((size,) + shape, np.float32)
  images = np.where((leaf == 0)[:, None, None, None], uniform, np.clip(gauss, 0.0, 1.0))
  names = ("uniform",) + tuple(f"gaussian_{s}" for s in NOISE_SIGMAS)
  parent = np.array([0] + [1] * len(NOISE_SIGMAS), np.int32)
  return QueryPool("noise", images.astype(np.float32), leaf, parent, ("uniform", "gaussian"),
                   names)
