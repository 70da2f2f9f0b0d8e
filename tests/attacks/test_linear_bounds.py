"""PGD and APGD against the closed-form minimal adversarial distance of a linear model.

For two classes, z = x W + b, a point's distance to the decision boundary is
d*_p = |z_0 - z_1| / ||w_0 - w_1||_q, q the dual norm of p (L1 for L-inf, L2 for L2).
The points lie in [0.3, 0.7]^D and every radius tested is at most 0.3, so the box [0, 1]
never binds (an L2 ball of radius 0.3 moves no coordinate by more than 0.3) and d*_p is
the true minimal distance. At each eps of a grid spanning the distances:
  - every point with d*_p >= eps must survive (exact: nothing is misclassified closer);
  - every point with d*_p <= eps / (1 + tol) must be broken (the attack reaches d*_p).
One compilation per attack and norm serves the whole grid (eps is traced).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rsec.attacks as A
from rsec.attacks import threat

D, B = 36, 64
# Sign steps reach the ball's best vertex exactly; L2 iterates approach the best point
# on the sphere geometrically (20 steps of PGD: within 1.3% here).
TOL = {"linf": 1e-3, "l2": 0.02}
ATTACKS = {
    "pgd": lambda eps, p: A.pgd(eps, p, steps=20),
    "apgd_ce": lambda eps, p: A.apgd_ce(eps, p, steps=20),
}


def two_class_problem(seed=1):
  rng = np.random.default_rng(seed)
  w = rng.normal(size=(D, 2))
  b = -0.5 * w.sum(0)       # the boundary passes through the box's centre
  w32, b32 = jnp.asarray(w, jnp.float32), jnp.asarray(b, jnp.float32)

  def logits_fn(x):
    return x.reshape(x.shape[0], -1) @ w32 + b32

  x = jnp.asarray(rng.uniform(0.3, 0.7, size=(B, 6, 6, 1)), jnp.float32)
  y = jnp.argmax(logits_fn(x), 1).astype(jnp.int32)
  v = w[:, 0] - w[:, 1]
  margin = np.abs(np.asarray(x, np.float64).reshape(B, -1) @ v + b[0] - b[1])
  dist = {"linf": margin / np.abs(v).sum(), "l2": margin / np.linalg.norm(v)}
  return logits_fn, x, y, dist


PROBLEM = two_class_problem()


@pytest.mark.parametrize("name", sorted(ATTACKS))
@pytest.mark.parametrize("p", ["linf", "l2"])
def test_reaches_the_minimal_distance_and_never_goes_below(name, p):
  logits_fn, x, y, dist = PROBLEM
  d = dist[p]
  grid = np.quantile(d, [0.2, 0.4, 0.6, 0.8])
  assert grid.max() <= 0.3   # the box cannot bind (see the module docstring)
  for eps in grid:
    x_adv = ATTACKS[name](float(eps), p)(logits_fn, jax.random.key(0), x, y)
    assert float(threat.norm(x_adv - x, p).max()) <= eps * (1 + 1e-5)
    broken = np.asarray(jnp.argmax(logits_fn(x_adv), 1) != y)
    too_close = broken & (d >= eps * (1 + 1e-5))
    assert not too_close.any(), d[too_close] / eps
    missed = ~broken & (d <= eps / (1 + TOL[p]))
    assert not missed.any(), d[missed] / eps   # how close to eps the missed points were
