"""What every pixel attack shares: the `ATTACKS` registry, boundary checks, compilation.

A pixel attack is a function

  attack(logits_fn, key, x, y, *, return_info=False, check=True) -> x_adv
                                                   (or (x_adv, info) with return_info)

built by a factory from config primitives. It checks its inputs (ValueError naming the
argument, before any compilation), then runs one module-level jitted function keyed by
(implementation, static spec, logits_fn). Floating-point hyperparameters (eps, step sizes)
are *traced* arguments, so pgd(eps=0.1) and pgd(eps=0.2) share one compilation, and a
robustness curve over eps compiles once. Pass the same logits_fn object to reuse it.
Called under a caller's jit/vmap, the attack simply inlines (no nested compilation).
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from rsec.checks import check_in_range, check_labels, is_tracing
from rsec.registry import Registry

LogitsFn = Callable[[jax.Array], jax.Array]
Attack = Callable[..., Any]
Impl = Callable[[Any, LogitsFn, jax.Array, jax.Array, jax.Array, Mapping[str, Any]],
                tuple[jax.Array, dict]]
ATTACKS: Registry[Callable[..., Attack]] = Registry("attack")


def check_key(key: Any, name: str = "key") -> None:
  """A typed PRNG key (jax.random.key) or a raw uint32[2] one (jax.random.PRNGKey)."""
  dtype = getattr(key, "dtype", None)
  if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
    if key.shape != ():
      raise ValueError(f"{name} must be a single PRNG key, got shape {key.shape}")
    return
  if dtype is None or np.dtype(dtype) != np.uint32 or tuple(key.shape) != (2,):
    raise ValueError(f"{name} must be a PRNG key (jax.random.key or PRNGKey), got "
                     f"{type(key).__name__} with dtype {dtype}")


def logits_shape(logits_fn: LogitsFn, x: Any, name: str = "logits_fn") -> tuple[int, int]:
  """(B, K) of logits_fn on x, from one abstract evaluation; ValueError if not [B, K] float."""
  if not callable(logits_fn):
    raise ValueError(f"{name} must be callable, got {type(logits_fn).__name__}")
  try:
    out = jax.eval_shape(logits_fn, jax.ShapeDtypeStruct(x.shape, x.dtype))
  except Exception as e:  # the caller's model failed on these shapes: say so plainly
    raise ValueError(f"{name} failed on images of shape {tuple(x.shape)} and dtype "
                     f"{x.dtype}: {type(e).__name__}: {e}") from e
  if not isinstance(out, jax.ShapeDtypeStruct):
    raise ValueError(f"{name} must return one array of logits [B, K], got {out}")
  if len(out.shape) != 2 or out.shape[0] != x.shape[0]:
    raise ValueError(f"{name} must return logits of shape ({x.shape[0]}, K), got "
                     f"{tuple(out.shape)}")
  if not jnp.issubdtype(out.dtype, jnp.floating):
    raise ValueError(f"{name} must return floating-point logits, got dtype {out.dtype}")
  return int(out.shape[0]), int(out.shape[1])


def check_images(x: Any, lo: float, hi: float, *, name: str = "x",
                 ndims: tuple[int, ...] | None = None) -> None:
  dtype = getattr(x, "dtype", None)
  # jnp.issubdtype, unlike NumPy's, knows bfloat16 and the other ml_dtypes floats.
  if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(f"{name} must be a floating-point array, got dtype {dtype}")
  if x.ndim < 2 or (ndims is not None and x.ndim not in ndims):
    want = "[B, ...]" if ndims is None else " or ".join(f"{d}-D" for d in ndims)
    raise ValueError(f"{name} must be a batch of images ({want}), got shape {x.shape}")
  check_in_range(name, x, lo, hi)


def check_attack_inputs(logits_fn: LogitsFn, key: Any, x: Any, y: Any, *, lo: float,
                        hi: float, min_classes: int = 2,
                        ndims: tuple[int, ...] | None = None) -> int:
  """All boundary checks of `attack(logits_fn, key, x, y)`; returns the number of classes."""
  check_key(key)
  check_images(x, lo, hi, ndims=ndims)
  if getattr(y, "ndim", None) == 1 and y.shape[0] != x.shape[0]:
    raise ValueError(f"y has {y.shape[0]} labels but x has a batch of {x.shape[0]}")
  _, k = logits_shape(logits_fn, x)
  if k < min_classes:
    raise ValueError(f"logits_fn returns {k} classes; this attack needs >= {min_classes}")
  check_labels("y", y, k, x.shape[0])
  return k


class _ById:
  """Hashes an unhashable logits_fn by identity so it can key the jit cache."""

  def __init__(self, fn):
    self.fn = fn

  def __call__(self, x):
    return self.fn(x)

  def __hash__(self):
    return id(self.fn)

  def __eq__(self, other):
    return isinstance(other, _ById) and other.fn is self.fn


def hashable_fn(fn: LogitsFn) -> LogitsFn:
  try:
    hash(fn)
    return fn
  except TypeError:
    return _ById(fn)


@functools.partial(jax.jit, static_argnums=0)
def _predict(logits_fn: LogitsFn, x: jax.Array) -> jax.Array:
  return jnp.argmax(logits_fn(x), axis=1)


def predict_labels(logits_fn: LogitsFn, x: jax.Array) -> jax.Array:
  """argmax logits_fn(x) [B], jitted once per (logits_fn, shape, sharding) and reused."""
  return _predict(hashable_fn(logits_fn), x)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _compiled(impl: Impl, spec: Any, logits_fn: LogitsFn, key, x, y, hparams):
  return impl(spec, logits_fn, key, x, y, hparams)


def make_attack(impl: Impl, spec: Any, hparams: Mapping[str, float], *, lo: float,
                hi: float, min_classes: int = 2, ndims: tuple[int, ...] | None = None,
                name: str = "attack") -> Attack:
  """Wraps `impl(spec, logits_fn, key, x, y, hparams) -> (x_adv, info)` as a public attack.

  spec: hashable static configuration (a NamedTuple of primitives); hparams: floats that
  become traced arguments. The returned function carries `.spec` and `.hparams`.
  """
  hparams = {k: float(v) for k, v in hparams.items()}

  def attack(logits_fn: LogitsFn, key: jax.Array, x: jax.Array, y: jax.Array, *,
             return_info: bool = False, check: bool = True):
    if check:
      check_attack_inputs(logits_fn, key, x, y, lo=lo, hi=hi, min_classes=min_classes,
                          ndims=ndims)
    if is_tracing(key, x, y):
      x_adv, info = impl(spec, logits_fn, key, x, y, hparams)
    else:
      x_adv, info = _compiled(impl, spec, hashable_fn(logits_fn), key, x, y, hparams)
    return (x_adv, info) if return_info else x_adv

  attack.__name__ = attack.__qualname__ = name
  attack.__doc__ = (f"{name} attack: attack(logits_fn, key, x [B, ...] in [{lo}, {hi}], "
                    f"y [B]) -> x_adv [B, ...].\n\nspec={spec}\nhparams={hparams}")
  attack.spec = spec
  attack.hparams = hparams
  return attack


def build_attack(name: str, **kwargs: Any) -> Attack:
  """`ATTACKS.get(name)(**kwargs)`: an attack from a config's name and primitives."""
  return ATTACKS.get(name)(**kwargs)
