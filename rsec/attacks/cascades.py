"""Worst-case cascades of attacks (AutoAttack-style): robust only if every member fails.

Members run in order; each only needs to attack the points still robust. Called eagerly
(the usual case, and how evaluate.py calls it) the cascade *skips work*: between members
it gathers the still-robust points on the host into a smaller batch padded to a power of
two (a multiple of the device count when x is sharded), so each member compiles for at
most log2(B) shapes. Called under a caller's jit/vmap it cannot gather, so every member
runs on the whole batch and only still-robust points are replaced. The two modes give each
member different batches, hence different random draws: both are deterministic in the key,
but their outputs can differ.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rsec.attacks.autopgd import apgd_ce, apgd_t
from rsec.attacks.base import (ATTACKS, Attack, build_attack, check_attack_inputs,
                               is_tracing, predict_labels)
from rsec.attacks.gradient import check_norm
from rsec.attacks.losses import MIN_CLASSES
from rsec.attacks.square_attack import square
from rsec.checks import check_choice


def _bucket(n: int, batch: int, n_dev: int) -> int:
  size = 1 << max(n - 1, 0).bit_length()
  size = -(-size // n_dev) * n_dev
  return min(size, batch)


def _run(a: Attack, logits_fn, key, x, y):
  # rsec attacks skip their boundary checks here (the cascade ran them once); any other
  # JAX callable of the attack signature is called as it is.
  if hasattr(a, "spec") or hasattr(a, "members"):
    return a(logits_fn, key, x, y, check=False)
  return a(logits_fn, key, x, y)


def _min_classes(members: Sequence[Attack]) -> int:
  specs = [getattr(m, "spec", None) for m in members]
  return max([2] + [MIN_CLASSES.get(getattr(s, "loss", ""), 2) for s in specs])


@ATTACKS.register("cascade")
def cascade(members: Sequence[Attack | tuple[str, Mapping[str, Any]]], lo: float = 0.0,
            hi: float = 1.0) -> Attack:
  """A cascade of attack functions, or of (name, kwargs) pairs built through ATTACKS.

  The result is an attack `(logits_fn, key, x, y, *, return_info, check) -> x_adv`; its
  info holds success [B], attempt_success [1, B] (the cascade is one attempt) and
  broken_by [B] int (index of the member that broke the point, -1 robust, -2 clean
  misclassified). Member i gets the key fold_in(key, i).
  """
  if isinstance(members, (str, bytes)) or not len(members):
    raise ValueError(f"members must be a non-empty sequence of attacks, got {members!r}")
  attacks = []
  for m in members:
    if isinstance(m, (tuple, list)) and len(m) == 2 and isinstance(m[0], str):
      attacks.append(build_attack(m[0], **dict(m[1])))
    elif callable(m):
      attacks.append(m)
    else:
      raise ValueError(f"members must hold attacks or (name, kwargs) pairs, got {m!r}")
  n_min = _min_classes(attacks)

  def full_batch(logits_fn, key, x, y):
    robust = jnp.argmax(logits_fn(x), axis=1) == y
    broken_by = jnp.where(robust, -1, -2)
    x_adv = x
    for i, a in enumerate(attacks):
      xa = _run(a, logits_fn, jax.random.fold_in(key, i), x, y)
      broken = robust & (jnp.argmax(logits_fn(xa), axis=1) != y)
      x_adv = jnp.where(broken.reshape((-1,) + (1,) * (x.ndim - 1)), xa, x_adv)
      robust, broken_by = robust & ~broken, jnp.where(broken, i, broken_by)
    return x_adv, robust, broken_by

  def compacting(logits_fn, key, x, y):
    x_dev = jnp.asarray(x)
    sharding = x_dev.sharding
    n_dev = len(sharding.device_set)
    put = (lambda a: jax.device_put(a, sharding)) if n_dev > 1 else jnp.asarray
    x_np, y_np = np.asarray(x_dev), np.asarray(y)
    robust = np.asarray(predict_labels(logits_fn, x_dev)) == y_np
    broken_by = np.where(robust, -1, -2)
    x_adv = x_np.copy()
    for i, a in enumerate(attacks):
      idx = np.flatnonzero(robust)
      if idx.size == 0:
        break
      size = _bucket(idx.size, x_np.shape[0], n_dev)
      sel = np.concatenate([idx, np.full(size - idx.size, idx[0])])
      xa = _run(a, logits_fn, jax.random.fold_in(key, i), put(x_np[sel]), put(y_np[sel]))
      pred = np.asarray(predict_labels(logits_fn, xa))[:idx.size]
      hit = idx[pred != y_np[idx]]
      x_adv[hit] = np.asarray(xa)[:idx.size][pred != y_np[idx]]
      robust[hit], broken_by[hit] = False, i
    return put(x_adv), jnp.asarray(robust), jnp.asarray(broken_by)

  def attack(logits_fn, key, x, y, *, return_info: bool = False, check: bool = True):
    if check:
      check_attack_inputs(logits_fn, key, x, y, lo=lo, hi=hi, min_classes=n_min)
    gather = not is_tracing(key, x, y) and getattr(x, "is_fully_addressable", True)
    x_adv, robust, broken_by = (compacting if gather else full_batch)(logits_fn, key, x, y)
    info = {"success": ~robust, "attempt_success": ~robust[None], "broken_by": broken_by}
    return (x_adv, info) if return_info else x_adv

  attack.__name__ = attack.__qualname__ = "cascade"
  attack.members = tuple(attacks)
  return attack


@ATTACKS.register("autoattack")
def autoattack(eps: float, norm: str = "linf", version: str = "standard", lo: float = 0.0,
               hi: float = 1.0) -> Attack:
  """APGD-CE, then APGD-T (DLR, 9 targets), then Square, as in AutoAttack's standard
  version but without FAB-T. "quick": 20-step APGDs, 3 targets, 200 Square queries.
  Needs >= 4 classes."""
  check_choice("version", version, ("standard", "quick"))
  check_norm(norm, ("linf", "l2"), "autoattack")
  quick = version == "quick"
  return cascade([
      apgd_ce(eps, norm, steps=20 if quick else 100, lo=lo, hi=hi),
      apgd_t(eps, norm, steps=20 if quick else 100, n_target_classes=3 if quick else 9,
             lo=lo, hi=hi),
      square(eps, norm, steps=200 if quick else 5000, lo=lo, hi=hi),
  ], lo=lo, hi=hi)
