"""Validation helpers for public boundaries.

Every public function checks its inputs here, before any tracing, and raises a
`ValueError` that names the argument and what was expected. They accept NumPy and
JAX arrays and refuse tracers for value checks (shape checks still work), so they
must be called outside `jit`.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np


def is_tracing(*arrays: Any) -> bool:
  """True when any argument is a JAX tracer (inside jit / grad / vmap): value checks are
  then skipped, shapes are still checked."""
  import jax
  return any(isinstance(a, jax.core.Tracer) for a in arrays)


def check_finite_scalar(name: str, value: Any, *, low: float | None = None,
                        high: float | None = None, low_inclusive: bool = True) -> float:
  """Returns `value` as a float after checking it is finite and inside [low, high]."""
  try:
    v = float(value)
  except (TypeError, ValueError):
    raise ValueError(f"{name} must be a real number, got {value!r}") from None
  if not math.isfinite(v):
    raise ValueError(f"{name} must be finite, got {v}")
  if low is not None and (v < low or (not low_inclusive and v == low)):
    op = ">=" if low_inclusive else ">"
    raise ValueError(f"{name} must be {op} {low}, got {v}")
  if high is not None and v > high:
    raise ValueError(f"{name} must be <= {high}, got {v}")
  return v


def check_positive_int(name: str, value: Any, *, minimum: int = 1) -> int:
  """Returns `value` as an int after checking it is an integer >= minimum."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
  if value < minimum:
    raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
  return int(value)


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
  """Checks `value` is one of `choices` (for names looked up in registries)."""
  choices = sorted(choices)
  if value not in choices:
    raise ValueError(f"unknown {name} {value!r}; expected one of {choices}")
  return value


def check_shape(name: str, x: Any, shape: Sequence[int | None]) -> None:
  """Checks `x.shape` against `shape`, where None matches any size."""
  got = tuple(getattr(x, "shape", ()))
  if len(got) != len(shape) or any(s is not None and s != g for s, g in zip(shape, got)):
    want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
    raise ValueError(f"{name} must have shape {want}, got {got}")


def check_float_array(name: str, x: Any) -> None:
  """Checks `x` is an array with a floating dtype (bfloat16 included)."""
  import jax.numpy as jnp
  dtype = getattr(x, "dtype", None)
  if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(f"{name} must be a floating-point array, got dtype {dtype}")


def check_all_finite(name: str, x: Any) -> None:
  """Checks every entry of `x` is finite (skipped for tracers)."""
  if is_tracing(x):
    return
  a = np.asarray(x)
  if not np.all(np.isfinite(a)):
    bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
    raise ValueError(f"{name} has {bad} non-finite entries (NaN or inf)")


def check_in_range(name: str, x: Any, low: float, high: float, *, atol: float = 1e-6) -> None:
  """Checks every entry of `x` lies in [low, high] (skipped for tracers)."""
  if is_tracing(x):
    return
  a = np.asarray(x)
  check_all_finite(name, a)
  if a.size and (a.min() < low - atol or a.max() > high + atol):
    raise ValueError(
        f"{name} must lie in [{low}, {high}], got values in [{a.min():.4g}, {a.max():.4g}]")


def check_labels(name: str, y: Any, num_classes: int, batch: int | None = None) -> None:
  """Checks integer labels of shape (batch,) with values in [0, num_classes)."""
  dtype = getattr(y, "dtype", None)
  if dtype is None or not np.issubdtype(np.dtype(dtype), np.integer):
    raise ValueError(f"{name} must be an integer array, got dtype {dtype}")
  if getattr(y, "ndim", None) != 1:
    raise ValueError(f"{name} must have shape (batch,), got {getattr(y, 'shape', None)}")
  if batch is not None and y.shape[0] != batch:
    raise ValueError(f"{name} has {y.shape[0]} entries but the images have batch {batch}")
  if is_tracing(y):
    return
  a = np.asarray(y)
  if a.size and (a.min() < 0 or a.max() >= num_classes):
    raise ValueError(
        f"{name} must lie in [0, {num_classes}), got values in [{a.min()}, {a.max()}]")
