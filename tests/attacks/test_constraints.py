"""Property: every attack's output lies in its eps-ball and in [lo, hi], for random shapes,
radii, norms, bounds and models."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings, strategies as st

import rsec.attacks as A
from rsec.attacks import threat
from tests.attacks.models import random_linear


def _factory(kind, eps, p, lo, hi):
  if kind == "fgsm":
    return A.fgsm(eps, p, lo=lo, hi=hi)
  if kind == "pgd":
    return A.pgd(eps, p, steps=3, restarts=2, lo=lo, hi=hi)
  if kind == "paper":
    return A.paper(eps, p, steps=3, restarts=2, lo=lo, hi=hi)
  if kind == "apgd":
    return A.apgd_ce(eps, "l2" if p == "l2" else "linf", steps=4, lo=lo, hi=hi)
  return A.square(eps, "l2" if p == "l2" else "linf", steps=4, lo=lo, hi=hi)


image_shapes = st.one_of(
    st.tuples(st.integers(1, 4), st.integers(1, 12)),
    st.tuples(st.integers(1, 4), st.integers(1, 6), st.integers(1, 6), st.sampled_from([1, 3])))


@settings(max_examples=12, deadline=None)
@given(image_shapes, st.sampled_from(["linf", "l2", "l1"]),
       st.sampled_from(["fgsm", "pgd", "paper", "apgd", "square"]), st.floats(0.0, 3.0),
       st.sampled_from([(0.0, 1.0), (-1.0, 1.0)]), st.integers(0, 2**31 - 1))
def test_output_inside_ball_and_box(shape, p, kind, eps, bounds, seed):
  if kind == "square" and len(shape) == 2:
    kind = "pgd"
  lo, hi = bounds
  attack = _factory(kind, eps, p, lo, hi)
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.uniform(lo, hi, size=shape), jnp.float32)
  f = random_linear(int(np.prod(shape[1:])), seed=seed % 7)
  y = jnp.asarray(rng.integers(0, 5, size=shape[0]), jnp.int32)
  x_adv = attack(f, jax.random.key(seed), x, y)
  assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
  assert bool(jnp.all(jnp.isfinite(x_adv)))
  assert float(x_adv.min()) >= lo and float(x_adv.max()) <= hi
  n = threat.norm(x_adv - x, attack.spec.norm)
  assert float(n.max()) <= eps * (1 + 1e-5) + 1e-5
