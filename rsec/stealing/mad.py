"""MAD (Orekondy et al., ICLR 2020, "Prediction Poisoning"), in closed form and batched.

The defender answers y~ instead of y so that the gradient an attacker's model would take
from y~ points as far as possible in angle from the one it would take from y, within
||y~ - y||_1 <= eps. With a surrogate of the attacker's model whose last layer is linear
on features [h; 1], the Jacobian of its log-probabilities with respect to that layer has
rows G_k = (e_k - p) (x) [h; 1] (p: the surrogate's posterior). For any y~ summing to 1,

    G^T y~ = sum_k y~_k (e_k - p) (x) [h; 1] = (y~ - p) (x) [h; 1],

so the features cancel in the angle: the objective ||u/|u| - v/|v|||^2 with u = G^T y~,
v = G^T y equals 2 - 2 cos(y~ - p, y - p), an angle in the K-dimensional posterior space.
No autograd and no per-query loop: O(K^2) per query for the K vertex candidates.

Variants (candidates y*, each moved to y~ = (1 - a) y + a y* with a = min(1, eps /
||y* - y||_1), then chosen by their objective *after* this line search):
- `mad`: the simplex vertices e_1 ... e_K;
- `mad_argmax`: uniform distributions over every class subset containing argmax(y),
  kept only if y~ keeps the argmax strictly (exhaustive 2^(K-1) for K <= 10, greedy
  beyond). Strictly: at eps >= 1 the line search reaches small subsets' uniform
  distributions, exact ties that keep the argmax only by lowest-index tie-breaking (47% of
  the answers at eps 1.5 on a FONTS victim before this was required);
- ablations: `mad_random` (one random vertex), `mad_identity` (G = I: the angle between
  y~ and y, no centring at p), `mad_argmin` (the vertex of the least likely class: what
  the reference code's un-normalised objective reduces to).
Fallback: where ||y - p||_2 < 1e-6 (a surrogate that agrees with the victim) the angle to
y - p is undefined, and the row uses the G = I objective instead (finite, and tested).
"""
from __future__ import annotations

import itertools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from rsec.checks import check_finite_scalar, check_positive_int
from rsec.stealing import outputs
from rsec.stealing.defences import (DEFENCES, AuxModel, Defence, DefenceContext,
                                    check_aux_model, line_search)

VARIANTS = ("mad", "mad_argmax", "mad_random", "mad_identity", "mad_argmin")
EXHAUSTIVE_MAX_CLASSES = 10
DEGENERATE_TOL = 1e-6


def angular_objective(y_tilde: jax.Array, y: jax.Array, p: jax.Array | None) -> jax.Array:
  """2 - 2 cos(y~ - p, y - p) over the last axis (p None: G = I, no centring).

  Equals ||G^T y~ / |G^T y~| - G^T y / |G^T y| ||^2 for MAD's last-layer Jacobian G.
  A zero vector has no direction: its objective is 0 (no deviation).
  """
  a = y_tilde if p is None else y_tilde - p
  b = y if p is None else y - p
  na, nb = jnp.linalg.norm(a, axis=-1), jnp.linalg.norm(b, axis=-1)
  ok = (na > 0) & (nb > 0)
  cos = jnp.sum(a * b, -1) / jnp.where(ok, na * nb, 1.0)
  return jnp.where(ok, 2.0 - 2.0 * jnp.clip(cos, -1.0, 1.0), 0.0)


def subset_patterns(num_classes: int) -> np.ndarray:
  """Every 0/1 pattern over the K - 1 classes other than the argmax: [2^(K-1), K-1]."""
  return np.array(list(itertools.product((0.0, 1.0), repeat=num_classes - 1)), np.float32)


def argmax_candidates(y: jax.Array) -> jax.Array:
  """y [K] -> uniform distributions over every class subset holding argmax(y): [2^(K-1), K]."""
  k = y.shape[-1]
  a = jnp.argmax(y)
  others = jnp.arange(k - 1)
  others = jnp.where(others < a, others, others + 1)         # the classes != a, in order
  masks = jnp.asarray(subset_patterns(k)) @ jax.nn.one_hot(others, k) + jax.nn.one_hot(a, k)
  return masks / jnp.sum(masks, -1, keepdims=True)


def _best(y, cands, valid, eps, p):
  """The candidate with the largest objective after the line search (valid ones only)."""
  yt = line_search(y, cands, eps)
  obj = jnp.where(valid(yt), angular_objective(yt, y, p), -jnp.inf)
  i = jnp.argmax(obj)
  return yt[i], obj[i]


def _keeps_argmax(y):
  """Whether y~ [..., K] keeps argmax(y) as its *strict* top-1 (a tie within
  outputs.TIE_TOL is not kept: only index tie-breaking would resolve it)."""
  return lambda yt: outputs.top1_share(yt, jnp.broadcast_to(jnp.argmax(y), yt.shape[:-1])) == 1


def _greedy_argmax(y, eps, p):
  """Greedy MAD-argmax for K > 10: grow the subset from {argmax} one class at a time (the
  class whose candidate has the largest objective, K - 1 rounds of K candidates) and
  answer the best candidate along the way that keeps the argmax strictly. Growing through
  candidates that do not (at eps >= 1 every two-class subset of a near-certain y is a
  tie) is what reaches the larger subsets that do."""
  k = y.shape[-1]
  eye = jnp.eye(k, dtype=y.dtype)
  mask = jax.nn.one_hot(jnp.argmax(y), k, dtype=y.dtype)
  start = line_search(y, mask, eps)
  keeps = _keeps_argmax(y)

  def round_(_, carry):
    mask, best_y, best = carry
    grown = mask + eye                                   # row j: the subset plus class j
    yt = line_search(y, grown / jnp.sum(grown, -1, keepdims=True), eps)
    obj = jnp.where(mask == 0, angular_objective(yt, y, p), -jnp.inf)
    valid = jnp.where(keeps(yt), obj, -jnp.inf)
    i = jnp.argmax(valid)
    better = valid[i] > best
    return (grown[jnp.argmax(obj)], jnp.where(better, yt[i], best_y),
            jnp.where(better, valid[i], best))

  _, best_y, _ = jax.lax.fori_loop(0, k - 1, round_,
                                   (mask, start, angular_objective(start, y, p)))
  return best_y


def mad_row(y: jax.Array, p: jax.Array, key: jax.Array, eps: float, variant: str) -> jax.Array:
  """One row: the MAD answer y~ [K] for posterior y [K] and surrogate posterior p [K]."""
  k = y.shape[-1]
  degenerate = jnp.linalg.norm(y - p) < DEGENERATE_TOL
  centre = None if variant == "mad_identity" else p

  def solve(centre):
    everything = lambda yt: jnp.ones(yt.shape[:-1], bool)
    if variant in ("mad", "mad_identity"):
      return _best(y, jnp.eye(k, dtype=y.dtype), everything, eps, centre)[0]
    if variant == "mad_random":
      return line_search(y, jax.nn.one_hot(jax.random.randint(key, (), 0, k), k), eps)
    if variant == "mad_argmin":
      return line_search(y, jax.nn.one_hot(jnp.argmin(y), k), eps)
    if k <= EXHAUSTIVE_MAX_CLASSES:
      return _best(y, argmax_candidates(y), _keeps_argmax(y), eps, centre)[0]
    return _greedy_argmax(y, eps, centre)

  if centre is None or variant in ("mad_random", "mad_argmin"):
    return solve(centre)
  return jnp.where(degenerate, solve(None), solve(centre))


def make_mad(variant: str, ctx: DefenceContext, eps: float, seed: int,
             surrogate: AuxModel | None) -> Defence:
  """A MAD defence (see the module docstring) with L1 budget `eps` and `surrogate`
  (default: the victim's architecture, randomly initialised from `seed`)."""
  eps = check_finite_scalar("defence eps", eps, low=0.0)
  seed = check_positive_int("defence seed", seed, minimum=0)
  k = ctx.num_classes
  if surrogate is None:
    if ctx.model_name is None or ctx.input_shape is None:
      raise ValueError(f"defence {variant!r} needs a surrogate: give surrogate=AuxModel(...) "
                       f"or a DefenceContext with model_name and input_shape")
    from rsec.models.classifiers import make_model
    model = make_model(ctx.model_name, k)
    variables = model.init(jax.random.key(seed), jnp.zeros((1,) + tuple(ctx.input_shape)),
                           train=False)
    surrogate = AuxModel(model.apply, variables)
  check_aux_model("surrogate", surrogate, k, ctx.input_shape)
  apply_fn = surrogate.apply_fn

  def apply(variables, y, x, keys):
    p = jax.nn.softmax(apply_fn(variables, x, train=False).astype(jnp.float32))
    y_tilde = jax.vmap(lambda yi, pi, ki: mad_row(yi, pi, ki, eps, variant))(y, p, keys)
    return outputs.renormalise(y_tilde)

  return Defence(variant, apply, surrogate.variables, randomised=variant == "mad_random",
                 needs_images=True)


def _register(variant: str) -> None:
  def factory(ctx: DefenceContext, eps: float = 0.5, seed: int = 0,
              surrogate: AuxModel | None = None) -> Defence:
    return make_mad(variant, ctx, eps, seed, surrogate)
  factory.__name__ = variant
  DEFENCES.register(variant)(factory)


for _v in VARIANTS:
  _register(_v)


# --- the per-query autograd reference (tests and benchmarks) ----------------------------

def autograd_objectives(apply_fn: Callable, variables: Any, last_layer: str, x: jax.Array,
                        y: jax.Array, candidates: jax.Array) -> jax.Array:
  """The MAD objective of each candidate answer by explicit Jacobians, as the paper states it.

  x [B, ...], y [B, K], candidates [B, M, K] -> [B, M]: G = d log softmax / d (kernel,
  bias) of `variables['params'][last_layer]` for each query (vmap of jacrev, one query at
  a time), u = G^T y~, v = G^T y, objective ||u/|u| - v/|v|||^2.
  """
  params = variables["params"]

  def one(xi, yi, ci):
    def log_probs(last):
      v = dict(variables, params={**params, last_layer: last})
      return jax.nn.log_softmax(apply_fn(v, xi[None], train=False)[0])
    jac = jax.jacrev(log_probs)(params[last_layer])  # leaves [K, *param_shape]
    g = jnp.concatenate([j.reshape(j.shape[0], -1) for j in jax.tree.leaves(jac)], axis=1)
    unit = lambda u: u / jnp.linalg.norm(u, axis=-1, keepdims=True)
    return jnp.sum((unit(ci @ g) - unit(yi @ g)) ** 2, -1)
  return jax.vmap(one)(x, y, candidates)
