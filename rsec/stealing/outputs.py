"""What a black box returns: output modes, pure functions of a posterior [B, K].

A victim computes its posterior, applies its defence (`rsec.stealing.defences`), then one
output mode:

| mode | output | dtype |
| --- | --- | --- |
| `probs` | the full (defended) posterior | float32 [B, K] |
| `topk` | the k largest entries kept, the rest zero, renormalised | float32 [B, K] |
| `rounded` | every entry rounded to `decimals` decimals, **not** renormalised, so the values stay on the 10^-d grid (rows sum to 1 only within K * 0.5 * 10^-d); a row that rounds to all zeros becomes one-hot on its argmax | float32 [B, K] |
| `ranking` | the class indices from most to least likely (ties: lower index first), without scores | int32 [B, K] |
| `label` | one-hot of the argmax (ties: lower index) | float32 [B, K] |

`rsec.stealing.defences` has the rounding / top-k / label *defences*, which return valid
distributions (rounding renormalises there) and compose with any output mode.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rsec.checks import check_choice, check_positive_int
from rsec.registry import Registry


class OutputMode(NamedTuple):
  """`fn(posterior [B, K]) -> outputs [B, K]` and what it returns."""
  name: str
  fn: Callable[[jax.Array], jax.Array]
  dtype: str          # 'float32' or 'int32'
  is_distribution: bool  # rows are non-negative and sum to 1


OUTPUT_MODES: Registry[Callable[..., OutputMode]] = Registry("output mode")


def renormalise(p: jax.Array) -> jax.Array:
  """Clips to >= 0 and divides each row by its sum; a row summing to 0 becomes uniform."""
  p = jnp.maximum(p, 0.0)
  s = jnp.sum(p, axis=-1, keepdims=True)
  k = p.shape[-1]
  return jnp.where(s > 0, p / jnp.where(s > 0, s, 1.0), 1.0 / k)


# Entries within TIE_TOL of a row's maximum tie with it: a reader of the float32 answer
# cannot tell them apart, so none of them is *the* top-1 (see `top1_share`).
TIE_TOL = 1e-6


def top1_share(p, k):
  """Share of the top-1 that class k [B] holds in rows p [B, K]: 1 / (number of entries
  within TIE_TOL of the row's maximum) if p[k] is one of them, else 0. A benign user who
  breaks ties at random is right with this probability. numpy or jax arrays."""
  xp = jnp if isinstance(p, jax.Array) else np
  top = p >= xp.max(p, axis=-1, keepdims=True) - TIE_TOL
  mine = xp.take_along_axis(top, xp.asarray(k)[..., None], axis=-1)[..., 0]
  return mine / xp.sum(top, axis=-1)


def one_hot_argmax(p: jax.Array) -> jax.Array:
  """One-hot rows of argmax(p) (ties: the lower index), float32 [B, K]."""
  return jax.nn.one_hot(jnp.argmax(p, axis=-1), p.shape[-1], dtype=jnp.float32)


def top_k(p: jax.Array, k: int) -> jax.Array:
  """Keeps the k largest entries per row (ties: lower index), zeroes the rest, renormalises."""
  _, idx = jax.lax.top_k(p, k)
  keep = jnp.sum(jax.nn.one_hot(idx, p.shape[-1], dtype=p.dtype), axis=-2)
  return renormalise(p * keep)


def round_to(p: jax.Array, decimals: int) -> jax.Array:
  """Rounds to `decimals` decimals (no renormalisation); an all-zero row -> one-hot argmax."""
  r = jnp.round(p * 10.0 ** decimals) / 10.0 ** decimals
  empty = jnp.sum(r, axis=-1, keepdims=True) == 0
  return jnp.where(empty, one_hot_argmax(p), r)


def ranking(p: jax.Array) -> jax.Array:
  """Class indices sorted from most to least likely; stable, so ties keep index order."""
  return jnp.argsort(-p, axis=-1, stable=True).astype(jnp.int32)


@OUTPUT_MODES.register("probs")
def _probs(num_classes: int) -> OutputMode:
  del num_classes
  return OutputMode("probs", lambda p: p, "float32", True)


@OUTPUT_MODES.register("topk")
def _topk(num_classes: int, k: int = 1) -> OutputMode:
  k = check_positive_int("output k", k)
  if k > num_classes:
    raise ValueError(f"output k must lie in [1, {num_classes}] (the class count), got {k}")
  return OutputMode("topk", lambda p: top_k(p, k), "float32", True)


@OUTPUT_MODES.register("rounded")
def _rounded(num_classes: int, decimals: int = 2) -> OutputMode:
  del num_classes
  decimals = check_positive_int("output decimals", decimals, minimum=0)
  return OutputMode("rounded", lambda p: round_to(p, decimals), "float32", False)


@OUTPUT_MODES.register("ranking")
def _ranking(num_classes: int) -> OutputMode:
  del num_classes
  return OutputMode("ranking", ranking, "int32", False)


@OUTPUT_MODES.register("label")
def _label(num_classes: int) -> OutputMode:
  del num_classes
  return OutputMode("label", one_hot_argmax, "float32", True)


_SETTINGS = {"topk": ("k",), "rounded": ("decimals",)}


def output_settings(name: str) -> tuple[str, ...]:
  """The settings output mode `name` takes (e.g. ('k',) for 'topk')."""
  return _SETTINGS.get(name, ())


def make_output_mode(name: str, num_classes: int, **kwargs) -> OutputMode:
  """The output mode `name` for K = `num_classes` classes; kwargs: `k` (topk),
  `decimals` (rounded). ValueError for an unknown name, an argument the mode does not
  take, or a value out of range."""
  check_choice("output mode", name, OUTPUT_MODES.names())
  check_positive_int("num_classes", num_classes, minimum=2)
  allowed = output_settings(name)
  extra = sorted(set(kwargs) - set(allowed))
  if extra:
    raise ValueError(f"output mode {name!r} takes {sorted(allowed) or 'no arguments'}, "
                     f"got {extra}")
  return OUTPUT_MODES.get(name)(num_classes, **kwargs)
