"""Robustness evaluation over a data set, in fixed-size batches, optionally data-parallel.

Every batch has the same shape (the last one is padded with copies of its final example
and the padding masked out of every statistic), so each attack compiles once. With a
`jax.sharding.Mesh` (rsec.parallel.data_mesh) batches are split over its 'batch' axis and
jit partitions the attacks across devices; numbers do not depend on the device count.

Definitions (N examples, C of them classified correctly when clean):
  robust_accuracy/A      fraction of all N correct both clean and on attack A's output.
  robust_accuracy/worst_case  correct clean and under every attack.
  success_rate/A         Stutz et al.: over the C correct examples, the fraction of
                         attempts (restarts, targets) whose result is misclassified.
  success_rate_any/A     over the C correct examples, fraction broken by A (any attempt).
  mean_{l1,l2,linf}/A    mean norm of x_adv - x over the examples A broke (NaN if none).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from rsec.attacks.base import (Attack, LogitsFn, check_images, check_key, logits_shape,
                               predict_labels)
from rsec.checks import check_finite_scalar, check_labels, check_positive_int
from rsec.parallel import batch_sharded, check_batch_divisible, replicated, shard_batch


def _check_data(logits_fn, key, x, y, batch_size, mesh, lo, hi) -> int:
  check_key(key)
  check_images(x, lo, hi)
  if getattr(y, "ndim", None) == 1 and y.shape[0] != x.shape[0]:
    raise ValueError(f"y has {y.shape[0]} labels but x has {x.shape[0]} examples")
  batch_size = check_positive_int("batch_size", batch_size)
  if mesh is not None:
    if not isinstance(mesh, Mesh):
      raise ValueError(f"mesh must be a jax.sharding.Mesh or None, got {type(mesh).__name__}")
    check_batch_divisible(batch_size, mesh)
  _, k = logits_shape(logits_fn, jax.ShapeDtypeStruct((batch_size,) + x.shape[1:], x.dtype))
  check_labels("y", y, k, x.shape[0])
  return batch_size


def _batches(x: np.ndarray, y: np.ndarray, batch_size: int):
  """Yields (x_batch, y_batch, n_valid), the last batch padded with its final example."""
  for start in range(0, x.shape[0], batch_size):
    xb, yb = x[start:start + batch_size], y[start:start + batch_size]
    n = xb.shape[0]
    if n < batch_size:
      pad = np.repeat(np.arange(n - 1, n), batch_size - n)
      xb, yb = np.concatenate([xb, xb[pad]]), np.concatenate([yb, yb[pad]])
    yield xb, yb, n


def _norms(d: np.ndarray) -> np.ndarray:
  d = np.abs(d.reshape(d.shape[0], -1).astype(np.float64))
  return np.stack([d.sum(1), np.sqrt((d * d).sum(1)), d.max(1, initial=0.0)], axis=1)


def _check_attacks(attacks: Any) -> None:
  if not isinstance(attacks, Mapping) or not attacks:
    raise ValueError(f"attacks must be a non-empty mapping name -> attack, got {attacks!r}")
  for name, a in attacks.items():
    if not isinstance(name, str) or not name or name == "worst_case" or "/" in name:
      raise ValueError(f"attack names must be non-empty strings without '/', not "
                       f"'worst_case'; got {name!r}")
    if not callable(a):
      raise ValueError(f"attacks[{name!r}] must be callable, got {type(a).__name__}")


def evaluate_attacks(logits_fn: LogitsFn, key: jax.Array, x: Any, y: Any,
                     attacks: Mapping[str, Attack], *, batch_size: int = 128,
                     mesh: Mesh | None = None, lo: float = 0.0,
                     hi: float = 1.0) -> dict[str, float]:
  """Clean and robust accuracy, success rates and perturbation norms of several attacks.

  Args:
    logits_fn: images [B, ...] -> logits [B, K]. key: PRNG key; attack i on batch b uses
      fold_in(fold_in(key, i), b). x: images [N, ...] in [lo, hi]. y: labels [N].
    attacks: name -> attack(logits_fn, key, x, y) (rsec factories, or any JAX callable
      of that signature, which is then jitted here once per shape).
    batch_size: examples per batch (a multiple of the mesh's device count).
    mesh: optional 1-D mesh with axis 'batch' to shard batches over.
  Returns:
    A flat dict of floats (see the module docstring), plus num_examples.
  """
  _check_attacks(attacks)
  batch_size = _check_data(logits_fn, key, x, y, batch_size, mesh, lo, hi)
  return _evaluate(logits_fn, key, np.asarray(x), np.asarray(y), attacks, batch_size, mesh)


def _evaluate(logits_fn, key, x_np, y_np, attacks, batch_size, mesh) -> dict[str, float]:
  """evaluate_attacks after its checks."""
  if mesh is None:
    place = lambda tree: jax.tree.map(jnp.asarray, tree)  # noqa: E731
  else:
    place = lambda tree: shard_batch(tree, mesh)  # noqa: E731

  def runner(a: Attack) -> Callable:
    if hasattr(a, "spec") or hasattr(a, "members"):  # rsec attacks compile (and skip) themselves
      return lambda k, xb, yb: a(logits_fn, k, xb, yb, return_info=True, check=False)
    kw = {} if mesh is None else {"in_shardings": (replicated(mesh), batch_sharded(mesh),
                                                   batch_sharded(mesh))}
    jitted = jax.jit(lambda k, xb, yb: a(logits_fn, k, xb, yb), **kw)
    return lambda k, xb, yb: (jitted(k, xb, yb), None)

  runners = {name: runner(a) for name, a in attacks.items()}
  clean, adv = [], {n: [] for n in attacks}
  rate, norms = {n: [] for n in attacks}, {n: [] for n in attacks}
  for b, (xb, yb, n) in enumerate(_batches(x_np, y_np, batch_size)):
    xd, yd = place((xb, yb))
    clean.append(np.asarray(predict_labels(logits_fn, xd))[:n] == yb[:n])
    for i, (name, run) in enumerate(runners.items()):
      x_adv, info = run(jax.random.fold_in(jax.random.fold_in(key, i), b), xd, yd)
      ok = np.asarray(predict_labels(logits_fn, x_adv))[:n] == yb[:n]
      adv[name].append(ok)
      if info is None:
        rate[name].append((~ok).astype(np.float64))
      else:
        rate[name].append(np.asarray(info["attempt_success"]).mean(0)[:n])
      norms[name].append(_norms(np.asarray(x_adv)[:n] - xb[:n]))

  correct = np.concatenate(clean)
  out = {"num_examples": float(x_np.shape[0]), "clean_accuracy": float(correct.mean())}
  worst = correct.copy()
  for name in attacks:
    ok = np.concatenate(adv[name])
    robust = correct & ok
    broken = correct & ~ok
    worst &= ok
    out[f"robust_accuracy/{name}"] = float(robust.mean())
    att = np.concatenate(rate[name])
    out[f"success_rate/{name}"] = float(att[correct].mean()) if correct.any() else float("nan")
    out[f"success_rate_any/{name}"] = (float(broken[correct].mean()) if correct.any()
                                       else float("nan"))
    nm = np.concatenate(norms[name])[broken]
    for j, p in enumerate(("l1", "l2", "linf")):
      out[f"mean_{p}/{name}"] = float(nm[:, j].mean()) if len(nm) else float("nan")
  out["robust_accuracy/worst_case"] = float(worst.mean())
  out["success_rate_any/worst_case"] = (float(1.0 - worst[correct].mean()) if correct.any()
                                        else float("nan"))
  return out


def robust_accuracy_curve(logits_fn: LogitsFn, key: jax.Array, x: Any, y: Any,
                          make_attack: Callable[[float], Attack], eps_grid: Sequence[float],
                          *, batch_size: int = 128, mesh: Mesh | None = None,
                          lo: float = 0.0, hi: float = 1.0) -> list[float]:
  """Robust accuracy at each eps in eps_grid (same key for all: common random numbers).

  rsec factories trace eps, so the whole curve compiles each attack once.
  """
  if isinstance(eps_grid, (str, bytes)) or not len(eps_grid):
    raise ValueError(f"eps_grid must be a non-empty sequence of numbers, got {eps_grid!r}")
  grid = [check_finite_scalar("eps_grid entry", e, low=0.0) for e in eps_grid]
  if not callable(make_attack):
    raise ValueError(f"make_attack must be callable eps -> attack, got {make_attack!r}")
  batch_size = _check_data(logits_fn, key, x, y, batch_size, mesh, lo, hi)
  x_np, y_np = np.asarray(x), np.asarray(y)
  return [_evaluate(logits_fn, key, x_np, y_np, {"attack": make_attack(e)}, batch_size,
                    mesh)["robust_accuracy/attack"] for e in grid]
