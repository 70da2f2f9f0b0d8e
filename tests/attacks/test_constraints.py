"""Property: every attack's output lies in its eps-ball and in [0, 1], for random shapes,
radii, norms and models."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings, strategies as st

import rsec.attacks as A
from rsec.attacks import threat
from tests.attacks.models import random_linear

SHAPES = [(4, 6, 6, 1), (3, 10), (2, 5, 5, 3)]


def _factory(kind, eps, p):
  if kind == "fgsm":
    return A.fgsm(eps, p)
  if kind == "pgd":
    return A.pgd(eps, p, steps=3, restarts=2)
  if kind == "paper":
    return A.paper(eps, p, steps=3, restarts=2)
  if kind == "apgd":
    return A.apgd_ce(eps, "l2" if p == "l2" else "linf", steps=4)
  return A.square(eps, "l2" if p == "l2" else "linf", steps=4)


def _norm_of(attack):
  return attack.spec.norm


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(SHAPES), st.sampled_from(["linf", "l2", "l1"]),
       st.sampled_from(["fgsm", "pgd", "paper", "apgd", "square"]), st.floats(0.0, 3.0),
       st.integers(0, 2**31 - 1))
def test_output_inside_ball_and_box(shape, p, kind, eps, seed):
  if kind == "square" and len(shape) == 2:
    kind = "pgd"
  attack = _factory(kind, eps, p)
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.uniform(size=shape), jnp.float32)
  f = random_linear(int(np.prod(shape[1:])))
  y = jnp.asarray(rng.integers(0, 5, size=shape[0]), jnp.int32)
  x_adv = attack(f, jax.random.key(seed), x, y)
  assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
  assert bool(jnp.all(jnp.isfinite(x_adv)))
  assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
  n = threat.norm(x_adv - x, _norm_of(attack))
  assert float(n.max()) <= eps * (1 + 1e-5) + 1e-5


