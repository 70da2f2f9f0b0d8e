"""The attack engine: one loop for every threat model.

`run_attack` maximises `loss(logits_fn(param.to_image(u, origin)))` (minus an optional
penalty) over u in the eps-ball of `norm` intersected with the parametrisation's box, with
a step rule from steps.py, restarts, per-example best-iterate selection and a guard that
never lets a non-finite iterate out. It is a pure, traceable function: callers jit, vmap
or shard it; its loops are `lax.fori_loop` (steps) inside `lax.scan` (attempts).

Selection (`select`), within an attempt and then across attempts:
  first_success: the first misclassified iterate (Stutz et al.); until one is found, the
                 highest-loss iterate.
  max_loss:      the highest-loss iterate (adversarial training).
  min_norm:      the misclassified iterate closest to the clean image in L2 (image space);
                 until one is found, the highest-loss iterate (C&W).
  last:          the final iterate (Madry et al.'s PGD, FGSM); across attempts, max_loss.
"Misclassified" is always argmax logits != y, targeted losses included: success means a
broken prediction, which is what robustness is measured by.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rsec.attacks.losses import LossFn
from rsec.attacks.params import Parametrisation, zero_of
from rsec.attacks.steps import StepContext, StepRule
from rsec.attacks.threat import INITS, NORMS, flat, project_ball
from rsec.checks import check_choice, check_positive_int

SELECTS = ("first_success", "max_loss", "min_norm", "last")
Penalty = Callable[[jax.Array, jax.Array, Any], jax.Array]


class _Best(NamedTuple):
  u: jax.Array     # [B, ...]
  obj: jax.Array   # [B] objective at u
  succ: jax.Array  # [B] misclassified at u
  dist: jax.Array  # [B] L2 image distance to the clean image (min_norm only, else 0)


def _bwhere(mask: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
  return jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - mask.ndim)), a, b)


def _merge(take: jax.Array, c: _Best, b: _Best) -> _Best:
  return _Best(*(_bwhere(take, x, y) for x, y in zip(c, b)))


def _better(select: str, c: _Best, b: _Best) -> jax.Array:
  """Where candidate c should replace the incumbent b, per example."""
  higher = c.obj > b.obj
  if select == "last":
    return jnp.ones_like(higher)
  if select == "max_loss":
    return higher
  tier = (c.succ & ~b.succ) | (~c.succ & ~b.succ & higher)
  if select == "min_norm":
    return tier | (c.succ & b.succ & (c.dist < b.dist))
  return tier


def _all_finite(a: jax.Array) -> jax.Array:
  return jnp.all(jnp.isfinite(flat(a)), axis=1)


def check_eps(eps: Any, name: str = "eps") -> None:
  """eps >= 0 and finite: scalar or per-example array (skipped for tracers)."""
  if isinstance(eps, jax.core.Tracer):
    return
  a = np.asarray(eps)
  if not np.issubdtype(a.dtype, np.number) or a.ndim > 1:
    raise ValueError(f"{name} must be a number or a [B] array, got {eps!r}")
  if not np.all(np.isfinite(a)) or np.any(a < 0):
    raise ValueError(f"{name} must be finite and >= 0, got {eps!r}")


def run_attack(logits_fn: Callable[[jax.Array], jax.Array], key: jax.Array, origin: Any,
               y: jax.Array, param: Parametrisation, *, norm: str, eps: Any,
               step: StepRule, loss: LossFn, steps: int, restarts: int = 1,
               init: str | Callable = "zero", select: str = "max_loss",
               targets: jax.Array | None = None, penalty: Penalty | None = None,
               unroll: int = 1) -> tuple[jax.Array, jax.Array, dict[str, jax.Array]]:
  """Runs an attack on any parametrisation; returns (u_best, x_best, info).

  Args:
    logits_fn: images [B, ...] -> logits [B, K]; must treat examples independently.
    key: PRNG key. origin: per-batch data for `param` (pixels: x0). y: labels [B] int.
    param: the parametrisation (params.py). norm, eps: the ball on u, eps scalar or [B].
    step: a StepRule. loss: `loss(logits, y, target) -> [B]` to maximise.
    steps: updates per attempt (steps gradient evaluations + 1 final forward pass).
    restarts: attempts per target. init: an INITS name or `fn(key, u0, norm, eps)`.
    select: see the module docstring. targets: [T, B] int target classes for targeted
      losses; attempts = T * restarts, target-major. penalty: `(u, x, origin) -> [B]`
      subtracted from the loss (C&W's distance term). unroll: fori_loop unroll factor.
  Returns:
    u_best [B, ...]; x_best = param.to_image(u_best) [B, ...], always finite; info with
    success [B] bool (x_best misclassified), attempt_success [R, B] bool (each attempt's
    selected iterate misclassified), loss [B] (objective at x_best).
  """
  check_choice("norm", norm, NORMS)
  check_choice("select", select, SELECTS)
  steps = check_positive_int("steps", steps)
  restarts = check_positive_int("restarts", restarts)
  unroll = check_positive_int("unroll", unroll)
  check_eps(eps)
  init_fn = INITS.get(init) if isinstance(init, str) else init

  zero = zero_of(param, origin)
  batch = zero.shape[0]
  if y.shape != (batch,):
    raise ValueError(f"y must have shape ({batch},) to match u, got {y.shape}")
  if targets is None:
    targets = y[None]
  elif targets.ndim != 2 or targets.shape[1] != batch:
    raise ValueError(f"targets must have shape (T, {batch}), got {targets.shape}")
  eps = jnp.asarray(eps, zero.dtype)
  attempt_targets = jnp.repeat(targets, restarts, axis=0)
  keys = jax.random.split(key, attempt_targets.shape[0])
  x_ref = param.to_image(zero, origin) if select == "min_norm" else None

  def project_box(u):
    return param.project(u, origin)

  def project(u):
    return param.project(project_ball(u, norm, eps), origin)

  def objective(u, target):
    x = param.to_image(u, origin)
    logits = logits_fn(x)
    obj = loss(logits, y, target).astype(jnp.float32)
    if penalty is not None:
      obj = obj - penalty(u, x, origin).astype(jnp.float32)
    dist = (jnp.sqrt(jnp.sum(flat(x - x_ref).astype(jnp.float32) ** 2, axis=1))
            if x_ref is not None else jnp.zeros_like(obj))
    return jnp.sum(obj), (obj, logits, dist)

  def evaluate(u, target, with_grad):
    if with_grad:
      (_, (obj, logits, dist)), g = jax.value_and_grad(objective, has_aux=True)(u, target)
    else:
      _, (obj, logits, dist) = objective(u, target)
      g = None
    ok = jnp.isfinite(obj) & _all_finite(logits)
    if g is not None:
      ok = ok & _all_finite(g)
      g = _bwhere(ok, g, jnp.zeros_like(g))
    cand = _Best(u, jnp.where(ok, obj, -jnp.inf), jnp.argmax(logits, axis=1) != y, dist)
    return cand, g, ok

  def record(best, cand, ok):
    return _merge(ok & _better(select, cand, best), cand, best)

  def attempt(k, target):
    k_init, k_steps = jax.random.split(k)
    u0 = project(init_fn(k_init, zero, norm, eps))
    none = _Best(u0, jnp.full((batch,), -jnp.inf), jnp.zeros((batch,), bool),
                 jnp.full((batch,), jnp.inf))

    def body(t, carry):
      u, state, best, u_ok = carry
      cand, g, ok = evaluate(u, target, step.needs_grad)
      best = record(best, cand, ok)
      u_ok = _bwhere(ok, u, u_ok)
      ctx = StepContext(project, project_box, jax.random.fold_in(k_steps, t), t)
      u_next, state = step.update(u, g, cand.obj, state, ctx)
      u_next = project(u_next)
      # A non-finite loss/gradient, or a rule that produced NaNs, sends the example back
      # to its last iterate with a finite loss.
      u_next = _bwhere(ok & _all_finite(u_next), u_next, u_ok)
      return u_next, state, best, u_ok

    carry = (u0, step.init(u0), none, u0)
    u, _, best, _ = jax.lax.fori_loop(0, steps, body, carry, unroll=unroll)
    cand, _, ok = evaluate(u, target, False)
    return record(best, cand, ok)

  def over_attempts(best, inputs):
    cand = attempt(*inputs)
    across = "max_loss" if select == "last" else select
    return _merge(_better(across, cand, best), cand, best), cand.succ

  start = _Best(zero, jnp.full((batch,), -jnp.inf), jnp.zeros((batch,), bool),
                jnp.full((batch,), jnp.inf))
  best, attempt_success = jax.lax.scan(over_attempts, start, (keys, attempt_targets))
  x_best = param.to_image(best.u, origin)
  good = _all_finite(x_best)
  u_best = _bwhere(good, best.u, zero)
  x_best = _bwhere(good, x_best, param.to_image(zero, origin))
  info = {"success": best.succ & good, "attempt_success": attempt_success,
          "loss": jnp.where(good, best.obj, -jnp.inf)}
  return u_best, x_best, info
