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


def l1_box_ascent(g: jax.Array, k: int, mass, cap: jax.Array) -> jax.Array:
  """Sparse L1 ascent that spends its L1 mass where the box lets coordinates move.

  g [B, ...]: the gradient; cap [B, ...] >= 0: how far each coordinate can move along
  sign(g) before the parametrisation's box stops it; mass: scalar or [B], the step's L1
  length; k: coordinates per step when the box binds nowhere. Coordinates in decreasing
  |g| each take min(cap, mass / k) until `mass` is spent. Where no box binds that is
  Tramer & Boneh's top-k sign step of L1 norm `mass`; where one does (a pixel near 0
  pushed down, or any single step longer than the box is wide), the part of a share the
  box would clip away goes to the next coordinates instead of being lost. The result
  maximises g . delta subject to ||delta||_1 <= mass, |delta_i| <= mass / k and the box
  (a fractional knapsack, which the greedy order solves); with k = 1 that is the L1 ball
  intersected with the box. Returns delta [B, ...].
  """
  gf, cf = flat(g), flat(cap)
  m = jnp.broadcast_to(jnp.asarray(mass, gf.dtype), (gf.shape[0],))[:, None]
  share = jnp.where(gf != 0, jnp.minimum(cf, m / k), 0.0)
  order = jnp.argsort(-jnp.abs(gf), axis=1)
  share_sorted = jnp.take_along_axis(share, order, axis=1)
  spent_before = jnp.cumsum(share_sorted, axis=1) - share_sorted
  take_sorted = jnp.clip(m - spent_before, 0.0, share_sorted)
  take = jnp.take_along_axis(take_sorted, jnp.argsort(order, axis=1), axis=1)
  return (jnp.sign(gf) * take).reshape(g.shape)


@STEPS.register("l1_topk")
def l1_topk_step(norm: str, steps: int, hp: Mapping[str, Any]) -> StepRule:
  """Sparse L1 ascent (SLIDE): an L1 step of length step_size on the top (1 - q) of |g|.

  hp: step_size, sparsity q in [0, 1) (0.99 moves the top 1% of coordinates), a Python
  float since it sets a shape. The box is respected inside the step (`l1_box_ascent`):
  a coordinate the parametrisation box stops short (a pixel at 0 pushed down) passes the
  rest of its share to the next coordinates, otherwise the L1 budget would be spent on
  nothing (FGSM-L1 with eps above the box width would move a single pixel).
  """
  del norm, steps
  step_size, q = hp["step_size"], float(hp.get("sparsity", 0.99))

  def init(u):
    del u
    return ()

  def update(u, g, loss, state, ctx):
    del loss
    s = per_example(step_size, u)
    cap = jnp.abs(ctx.project_box(u + s * jnp.sign(g)) - u)
    d = flat(u).shape[1]
    k = max(1, min(d, int(round((1.0 - q) * d))))
    return u + l1_box_ascent(g, k, step_size, cap), state

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
