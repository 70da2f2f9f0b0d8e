"""The engine and the attack contract on random models: determinism, compilation,
caller transforms, non-finite guards, selection semantics, a non-pixel parametrisation."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rsec.attacks as A
from tests.attacks.models import random_linear


def test_same_key_same_output_and_key_matters():
  f = random_linear(36)
  x = jax.random.uniform(jax.random.key(0), (8, 6, 6, 1))
  y = jnp.arange(8) % 5
  for attack in (A.pgd(0.1, steps=5), A.square(0.1, steps=10), A.apgd_ce(0.1, steps=5)):
    a = attack(f, jax.random.key(3), x, y)
    b = attack(f, jax.random.key(3), x, y)
    c = attack(f, jax.random.key(4), x, y)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_compiles_once_per_shape():
  f = random_linear(36)
  attack = A.pgd(0.1, steps=5, restarts=2)
  run = jax.jit(chex.assert_max_traces(
      lambda k, x, y: attack(f, k, x, y, check=False), n=1))
  for i in range(3):
    x = jax.random.uniform(jax.random.key(i), (8, 6, 6, 1))
    run(jax.random.key(i), x, jnp.arange(8) % 5).block_until_ready()


def test_eager_calls_reuse_one_compilation_across_eps():
  calls = []
  w = jax.random.normal(jax.random.key(0), (36, 5))

  def f(x):
    calls.append(1)  # runs only while tracing
    return x.reshape(x.shape[0], -1) @ w

  x = jax.random.uniform(jax.random.key(1), (8, 6, 6, 1))
  y = jnp.arange(8) % 5
  A.pgd(0.1, steps=5)(f, jax.random.key(0), x, y, check=False)
  n = len(calls)
  for eps in (0.05, 0.2, 0.3):
    A.pgd(eps, steps=5)(f, jax.random.key(1), x + 0.0, y, check=False)
  assert len(calls) == n


def test_caller_can_jit_and_vmap():
  f = random_linear(36)
  attack = A.pgd(0.2, steps=4)
  x = jax.random.uniform(jax.random.key(1), (4, 6, 6, 1))
  y = jnp.arange(4)
  eager = attack(f, jax.random.key(0), x, y)
  jitted = jax.jit(lambda k, x, y: attack(f, k, x, y))(jax.random.key(0), x, y)
  np.testing.assert_allclose(eager, jitted, atol=1e-6)
  keys = jax.random.split(jax.random.key(0), 3)
  many = jax.vmap(lambda k: attack(f, k, x, y))(keys)
  assert many.shape == (3,) + x.shape
  np.testing.assert_allclose(many[0], attack(f, keys[0], x, y), atol=1e-6)


def test_unroll_does_not_change_the_result():
  f = random_linear(36)
  x = jax.random.uniform(jax.random.key(1), (4, 6, 6, 1))
  y = jnp.arange(4)
  a = A.pgd(0.2, steps=6, unroll=1)(f, jax.random.key(0), x, y)
  b = A.pgd(0.2, steps=6, unroll=3)(f, jax.random.key(0), x, y)
  np.testing.assert_allclose(a, b, atol=1e-6)


def test_non_finite_loss_keeps_last_finite_iterate():
  w = jax.random.normal(jax.random.key(0), (36, 5))

  def f(x):  # NaN logits once an image gets bright: the attack must not return those
    z = x.reshape(x.shape[0], -1) @ w
    bright = jnp.mean(x, axis=(1, 2, 3)) > 0.52
    return jnp.where(bright[:, None], jnp.nan, z)

  x = jnp.full((6, 6, 6, 1), 0.5) + 0.01 * jax.random.normal(jax.random.key(1), (6, 6, 6, 1))
  y = jnp.arange(6) % 5
  for attack in (A.pgd(0.3, steps=10), A.paper(0.3, steps=10), A.apgd_ce(0.3, steps=10),
                 A.square(0.3, steps=10), A.cw_l2(steps=10, c=10.0)):
    x_adv = attack(f, jax.random.key(0), x, y)
    assert bool(jnp.all(jnp.isfinite(x_adv)))
    assert bool(jnp.all(jnp.isfinite(f(x_adv))))


def test_first_success_semantics():
  f = random_linear(36, seed=2)
  x = jax.random.uniform(jax.random.key(1), (16, 6, 6, 1))
  y = jnp.argmax(f(x), 1)
  x_adv, info = A.paper(0.1, steps=10, restarts=3)(f, jax.random.key(0), x, y,
                                                   return_info=True)
  assert info["attempt_success"].shape == (3, 16)
  np.testing.assert_array_equal(info["success"], info["attempt_success"].any(0))
  np.testing.assert_array_equal(info["success"], jnp.argmax(f(x_adv), 1) != y)
  assert 0 < int(info["success"].sum()) < 16


def test_max_loss_never_below_clean_loss():
  f = random_linear(36, seed=3)
  x = jax.random.uniform(jax.random.key(1), (16, 6, 6, 1))
  y = jnp.arange(16) % 5
  x_adv, info = A.pgd(0.05, steps=5, init="zero", select="max_loss")(
      f, jax.random.key(0), x, y, return_info=True)
  clean = A.cross_entropy(f(x), y)
  assert bool(jnp.all(info["loss"] >= clean - 1e-5))
  np.testing.assert_allclose(info["loss"], A.cross_entropy(f(x_adv), y), rtol=1e-5, atol=1e-5)


def test_latent_parametrisation_plugs_into_the_engine():
  """A toy generator x = sigmoid(z @ D) attacked in z under an L-inf ball and a z-box."""
  d_z, k = 4, 5
  dec = jax.random.normal(jax.random.key(0), (d_z, 36))
  f = random_linear(36, seed=4)

  def to_image(u, origin):
    z0, dec = origin
    return jax.nn.sigmoid((z0 + u) @ dec).reshape(-1, 6, 6, 1)

  def project(u, origin):
    z0, _ = origin
    return jnp.clip(z0 + u, -2.0, 2.0) - z0

  param = A.Parametrisation(to_image, project, zero=lambda origin: jnp.zeros_like(origin[0]))
  z0 = jax.random.uniform(jax.random.key(1), (8, d_z), minval=-2, maxval=2)
  y = jnp.argmax(f(to_image(jnp.zeros_like(z0), (z0, dec))), 1)
  step = A.STEPS.get("sign")("linf", 10, {"step_size": 0.05})
  run = jax.jit(lambda key: A.run_attack(
      f, key, (z0, dec), y, param, norm="linf", eps=0.3, step=step,
      loss=A.make_loss("ce"), steps=10, restarts=2, init="uniform", select="max_loss"))
  u, x_adv, info = run(jax.random.key(2))
  assert u.shape == z0.shape and x_adv.shape == (8, 6, 6, 1)
  assert float(jnp.abs(u).max()) <= 0.3 + 1e-6
  assert float(jnp.abs(z0 + u).max()) <= 2.0 + 1e-6
  assert bool(jnp.all(info["loss"] >= A.cross_entropy(f(to_image(0 * z0, (z0, dec))), y)))
  assert 0 < int(info["success"].sum())


def test_apgd_checkpoints_follow_the_paper():
  """p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), w_j = ceil(p_j N)."""
  is_ck, window = A.checkpoints(100)
  np.testing.assert_array_equal(np.flatnonzero(is_ck), [22, 41, 57, 70, 80, 87, 93, 99])
  np.testing.assert_array_equal(window[is_ck], [22, 19, 16, 13, 10, 7, 6, 6])


def test_square_p_schedule_halves_on_the_papers_marks():
  from rsec.attacks.square_attack import p_schedule
  got = [float(p_schedule(jnp.asarray(t), 10000, 0.8)) for t in (0, 10, 11, 51, 201, 8001)]
  np.testing.assert_allclose(got, [0.8, 0.8, 0.4, 0.2, 0.1, 0.8 / 512], rtol=1e-6)
  # Budgets other than 10000 are rescaled: the same fractions of the run.
  np.testing.assert_allclose(float(p_schedule(jnp.asarray(2), 100, 0.8)), 0.2, rtol=1e-6)


@pytest.mark.parametrize("k, mass", [(1, 0.7), (3, 2.0), (8, 40.0)])
def test_sparse_l1_step_solves_its_linear_program(k, mass):
  """l1_box_ascent maximises g . delta over ||delta||_1 <= mass, |delta_i| <= mass / k,
  sign(delta_i) = sign(g_i) and the box capacities; checked against scipy's LP solver."""
  from scipy.optimize import linprog
  from rsec.attacks.steps import l1_box_ascent
  rng = np.random.default_rng(k)
  g = rng.normal(size=(3, 16)) * (rng.random((3, 16)) > 0.2)   # some zero gradients
  cap = rng.uniform(0, 1.5, size=(3, 16)) * (rng.random((3, 16)) > 0.2)  # some blocked
  delta = np.asarray(l1_box_ascent(jnp.asarray(g, jnp.float32), k, mass,
                                   jnp.asarray(cap, jnp.float32)), np.float64)
  for i in range(3):
    # Variables a_j = |delta_j| >= 0 moved along sign(g_j).
    lp = linprog(-np.abs(g[i]), A_ub=np.ones((1, 16)), b_ub=[mass],
                 bounds=list(zip(np.zeros(16), np.minimum(cap[i], mass / k))))
    assert lp.status == 0
    np.testing.assert_allclose(g[i] @ delta[i], -lp.fun, rtol=1e-5, atol=1e-5)
    assert np.abs(delta[i]).sum() <= mass * (1 + 1e-6)
    assert np.all(np.abs(delta[i]) <= np.minimum(cap[i], mass / k) + 1e-6)
    assert np.all(delta[i] * g[i] >= 0) and np.all(delta[i][g[i] == 0] == 0)


def test_sparse_l1_step_without_a_binding_box_is_the_top_k_sign_step():
  from rsec.attacks.steps import l1_box_ascent
  g = jax.random.normal(jax.random.key(0), (4, 20))
  delta = l1_box_ascent(g, 5, 2.0, jnp.full_like(g, 10.0))
  top = jnp.argsort(-jnp.abs(g), axis=1)[:, :5]
  want = jnp.zeros_like(g).at[jnp.arange(4)[:, None], top].set(
      0.4 * jnp.sign(jnp.take_along_axis(g, top, axis=1)))
  np.testing.assert_allclose(delta, want, atol=1e-6)


def test_fgsm_l1_spends_a_budget_wider_than_the_box():
  """Regression: the sparse step once put all of eps on the top pixel and let the box
  clip it, so FGSM-L1 moved one pixel by at most hi - lo whatever eps was."""
  f = random_linear(36, seed=5)
  x = jnp.full((4, 6, 6, 1), 0.5)
  y = jnp.argmax(f(x), 1)
  for eps in (0.3, 3.0, 12.0):
    d = A.fgsm(eps, "l1")(f, jax.random.key(0), x, y) - x
    np.testing.assert_allclose(jnp.abs(d).reshape(4, -1).sum(1), eps, rtol=1e-5)
    assert float(jnp.abs(d).max()) <= 0.5 + 1e-6
