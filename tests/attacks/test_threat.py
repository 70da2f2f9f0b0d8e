"""Norm balls, projections and initialisers (threat.py) and losses (losses.py)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings, strategies as st

from rsec.attacks import losses, threat

SETTINGS = settings(settings.get_profile("rsec-attacks"), max_examples=25)  # conftest.py
# Jitted, each example compiles once for its shape instead of once per primitive.
project_l1 = jax.jit(threat.project_l1)
project_ball = jax.jit(threat.project_ball, static_argnums=1)


def l1_reference(v: np.ndarray, eps: float) -> np.ndarray:
  """Projection onto the L1 ball by bisection on the soft threshold (float64)."""
  a = np.abs(v)
  if a.sum() <= eps:
    return v
  lo, hi = 0.0, a.max()
  for _ in range(200):
    tau = (lo + hi) / 2
    if np.maximum(a - tau, 0).sum() > eps:
      lo = tau
    else:
      hi = tau
  return np.sign(v) * np.maximum(a - (lo + hi) / 2, 0)


@SETTINGS
@given(st.integers(1, 4), st.integers(1, 24), st.floats(0.0, 5.0), st.floats(0.01, 10.0),
       st.integers(0, 2**31 - 1))
def test_l1_projection_matches_bisection(b, d, eps, scale, seed):
  v = np.random.default_rng(seed).normal(size=(b, d)) * scale
  got = np.asarray(project_l1(jnp.asarray(v, jnp.float32), eps))
  want = np.stack([l1_reference(row, eps) for row in v])
  np.testing.assert_allclose(got, want, atol=1e-4 * max(1.0, scale))
  assert np.all(np.abs(got).sum(1) <= eps * (1 + 1e-5) + 1e-5)


@SETTINGS
@given(st.sampled_from(["linf", "l2", "l1"]), st.integers(1, 6), st.floats(0.0, 2.0),
       st.integers(0, 2**31 - 1))
def test_projection_is_nearest_point_of_ball(p, d, eps, seed):
  """No random point of the ball is closer to v than its projection (brute force)."""
  rng = np.random.default_rng(seed)
  v = jnp.asarray(rng.normal(size=(1, d)) * 2, jnp.float32)
  proj = project_ball(v, p, eps)
  assert float(threat.norm(proj, p)[0]) <= eps * (1 + 1e-5) + 1e-6
  cands = project_ball(jnp.asarray(rng.normal(size=(2000, d)) * eps, jnp.float32), p, eps)
  best = float(jnp.min(jnp.sum((cands - v) ** 2, 1)))
  assert float(jnp.sum((proj - v) ** 2)) <= best + 1e-5
  np.testing.assert_allclose(project_ball(proj, p, eps), proj, atol=1e-5)


@pytest.mark.parametrize("p", ["linf", "l2", "l1"])
def test_uniform_init_is_uniform_in_volume(p):
  """For u uniform in a d-ball, (||u|| / eps)^d ~ U(0, 1): mean 1/2, variance 1/12."""
  d, n, eps = 3, 20000, 0.7
  u = threat.init_uniform(jax.random.key(0), jnp.zeros((n, d)), p, eps)
  r = np.asarray(threat.norm(u, p)) / eps
  assert r.max() <= 1 + 1e-6
  np.testing.assert_allclose((r ** d).mean(), 0.5, atol=0.01)
  np.testing.assert_allclose((r ** d).var(), 1 / 12, atol=0.005)
  np.testing.assert_allclose(np.asarray(u).mean(0), 0.0, atol=0.02)


@pytest.mark.parametrize("p", ["linf", "l2", "l1"])
def test_random_direction_init_has_uniform_radius(p):
  n, eps = 20000, 0.3
  u = threat.init_random_direction(jax.random.key(1), jnp.zeros((n, 4, 2)), p, eps)
  r = np.asarray(threat.norm(u, p)) / eps
  assert r.max() <= 1 + 1e-6
  np.testing.assert_allclose(r.mean(), 0.5, atol=0.01)


def test_per_example_eps():
  u = jnp.ones((3, 4))
  eps = jnp.array([0.0, 0.5, 2.0])
  for p in ("linf", "l2", "l1"):
    n = threat.norm(threat.project_ball(u, p, eps), p)
    np.testing.assert_allclose(n, jnp.minimum(eps, threat.norm(u, p)), atol=1e-6)
  z = threat.init_uniform(jax.random.key(0), jnp.zeros((3, 4)), "l2", eps)
  assert float(jnp.abs(z[0]).max()) == 0.0


def test_cross_entropy_matches_optax():
  z = jax.random.normal(jax.random.key(0), (6, 5)) * 3
  y = jnp.arange(6) % 5
  np.testing.assert_allclose(losses.cross_entropy(z, y),
                             optax.softmax_cross_entropy_with_integer_labels(z, y), rtol=1e-5)
  t = (y + 1) % 5
  np.testing.assert_allclose(losses.cross_entropy_targeted(z, y, t),
                             -optax.softmax_cross_entropy_with_integer_labels(z, t), rtol=1e-5)


def test_margin_values_and_cap():
  z = jnp.array([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0]])
  y = jnp.array([0, 0])
  np.testing.assert_allclose(losses.margin(z, y), [-1.0, 5.0])
  np.testing.assert_allclose(losses.margin(z, y, kappa=2.0), [-1.0, 2.0])
  np.testing.assert_allclose(losses.margin_targeted(z, y, jnp.array([2, 2])), [-1.0, -4.0])


@SETTINGS
@given(st.floats(0.1, 10.0), st.floats(-5.0, 5.0), st.integers(0, 2**31 - 1))
def test_dlr_is_shift_and_scale_invariant(a, b, seed):
  z = jax.random.normal(jax.random.key(seed), (4, 6))
  y = jnp.array([0, 1, 2, 3])
  t = jnp.array([5, 4, 3, 2])
  np.testing.assert_allclose(losses.dlr(a * z + b, y), losses.dlr(z, y), rtol=1e-3, atol=1e-4)
  np.testing.assert_allclose(losses.dlr_targeted(a * z + b, y, t),
                             losses.dlr_targeted(z, y, t), rtol=1e-3, atol=1e-4)


def test_ranked_targets_excludes_label():
  z = jnp.array([[0.0, 3.0, 2.0, 1.0], [9.0, 1.0, 2.0, 3.0]])
  y = jnp.array([1, 3])
  np.testing.assert_array_equal(losses.ranked_targets(z, y, 3), [[2, 0], [3, 2], [0, 1]])
