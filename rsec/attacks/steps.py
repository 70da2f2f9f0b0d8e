"""Step rules: how u moves given the gradient (or only the loss) at the current iterate.

A `StepRule` is an optax-like (init, update) pair on u with *ascent* semantics:

  state = rule.init(u0)
  u_next, state = rule.update(u, g, loss, state, ctx)

with u [B, ...], g = d(loss)/du [B, ...] (None for gradient-free rules), loss [B] at u,
and ctx the engine's `StepContext` (the projections, a fresh PRNG key, the step index).
The engine projects u_next once more, so a rule may return an infeasible point; rules
that need the projection inside the step (APGD's momentum) call `ctx.project` themselves.

Rules are built by name through `STEPS`: `STEPS.get(name)(norm, steps, hp)`, where hp is a
mapping of (possibly traced) float hyperparameters, so that changing eps or a step size
does not recompile an attack.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import optax

from rsec.attacks.threat import flat, norm as norm_of, per_example
from rsec.registry import Registry

_TINY = 1e-12


class StepContext(NamedTuple):
  """What the engine hands a rule at each step."""
  project: Callable[[jax.Array], jax.Array]      # ball then parametrisation box
  project_box: Callable[[jax.Array], jax.Array]  # parametrisation box only
  key: jax.Array                                 # fresh for every step
  t: jax.Array                                   # step index, int32 scalar in [0, steps)


class StepRule(NamedTuple):
  init: Callable[[jax.Array], Any]
  update: Callable[..., tuple[jax.Array, Any]]
  needs_grad: bool = True


StepFactory = Callable[[str, int, Mapping[str, Any]], StepRule]
STEPS: Registry[StepFactory] = Registry("step rule")


def sign_direction(g: jax.Array) -> jax.Array:
  """Steepest ascent under L-inf: sign(g)."""
  return jnp.sign(g)


def l2_direction(g: jax.Array) -> jax.Array:
  """Steepest ascent under L2: g / ||g||_2 per example (0 where g = 0)."""
  return g / jnp.maximum(per_example(norm_of(g, "l2"), g), _TINY)


def l1_topk_direction(g: jax.Array, k: int) -> jax.Array:
  """Sparse L1 ascent (Tramer & Boneh): sign(g) on the k largest |g_i|, L1 norm 1.

  Ties at the k-th value are all kept, so the support can exceed k; the result is
  renormalised to unit L1 norm either way.
  """
  a = jnp.abs(flat(g))
  kth = jax.lax.top_k(a, k)[0][:, -1:]
  mask = (a >= kth) & (a > 0)
  d = jnp.sign(flat(g)) * mask
  return (d / jnp.maximum(jnp.sum(mask, axis=1, keepdims=True), 1)).reshape(g.shape)


def _stateless(direction: Callable[[jax.Array], jax.Array], step_size) -> StepRule:
  def init(u):
    del u
    return ()

  def update(u, g, loss, state, ctx):
    del loss, ctx
    return u + per_example(step_size, u) * direction(g), state

  return StepRule(init, update)


@STEPS.register("sign")
def sign_step(norm: str, steps: int, hp: Mapping[str, Any]) -> StepRule:
  """u + step_size * sign(g): FGSM / PGD-L-inf. hp: step_size."""
  del norm, steps
  return _stateless(sign_direction, hp["step_size"])


@STEPS.register("l2")
def l2_step(norm: str, steps: int, hp: Mapping[str, Any]) -> StepRule:
  """u + step_size * g / ||g||_2: FGM / PGD-L2. hp: step_size."""
  del norm, steps
  return _stateless(l2_direction, hp["step_size"])


@STEPS.register("l1_topk")
def l1_topk_step(norm: str, steps: int, hp: Mapping[str, Any]) -> StepRule:
  """Sparse L1 descent (SLIDE): step_size * unit-L1 sign step on the top (1 - q) of |g|.

  hp: step_size, sparsity q in [0, 1) (0.99 moves the top 1% of coordinates), a Python
  float since it sets a shape. Coordinates the parametrisation box would block (a pixel
  at 0 pushed down) are dropped first, otherwise the L1 budget is spent on nothing.
  """
  del norm, steps
  step_size, q = hp["step_size"], float(hp.get("sparsity", 0.99))

  def init(u):
    del u
    return ()

  def update(u, g, loss, state, ctx):
    del loss
    free = ctx.project_box(u + jnp.sign(g)) != u
    g = jnp.where(free, g, 0.0)
    d = flat(u).shape[1]
    k = max(1, min(d, int(round((1.0 - q) * d))))
    return u + per_example(step_size, u) * l1_topk_direction(g, k), state

  return StepRule(init, update)


def from_optax(tx: optax.GradientTransformation) -> StepRule:
  """Any optax optimiser as an ascent rule on u (it descends on -loss).

  Element-wise optimisers (Adam, SGD, RMSProp) keep examples independent; ones that
  couple coordinates globally (e.g. global-norm clipping) would mix the batch.
  """

  def update(u, g, loss, state, ctx):
    del loss, ctx
    upd, state = tx.update(-g, state, u)
    return u + upd, state

  return StepRule(tx.init, update)


@STEPS.register("adam")
def adam_step(norm: str, steps: int, hp: Mapping[str, Any]) -> StepRule:
  """Adam on u (Stutz et al., C&W). hp: step_size (the learning rate)."""
  del norm, steps
  return from_optax(optax.adam(hp["step_size"]))


def default_step_for(norm: str) -> str:
  """The steepest-ascent rule matching a norm ball."""
  return {"linf": "sign", "box": "sign", "l2": "l2", "l1": "l1_topk"}[norm]
