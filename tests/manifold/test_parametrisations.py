"""On-manifold and deformation parametrisations on the one attack engine."""
import jax
import jax.numpy as jnp
import numpy as np

from rsec import attacks as A
from rsec.data import warp
from rsec.manifold import parametrisations
from tests.attacks.models import random_linear

LOW = np.array([-0.2, -0.2, -0.3, -0.3, 0.8, -0.5], np.float32)
HIGH = np.array([0.2, 0.2, 0.3, 0.3, 1.2, 0.5], np.float32)


def _adam(steps, lr=0.05):
  return A.STEPS.get("adam")("linf", steps, {"step_size": lr})


def test_true_manifold_attack_outputs_renders_inside_ball_and_ranges(prototypes):
  b = 6
  f = random_linear(256, k=3, seed=1)
  logits_fn = lambda x: f(x.reshape(x.shape[0], -1))
  font, char = np.arange(b) % 2, np.arange(b) % 3
  theta0 = jax.random.uniform(jax.random.key(0), (b, 6), minval=LOW, maxval=HIGH)
  param = parametrisations.true_manifold(prototypes, LOW, HIGH)
  origin = parametrisations.true_origin(font, char, theta0, LOW, HIGH)
  u, x, info = jax.jit(lambda k: A.run_attack(
      logits_fn, k, origin, jnp.asarray(char), param, norm="linf", eps=0.3,
      step=_adam(10), loss=A.make_loss("ce"), steps=10, restarts=2, init="uniform",
      select="first_success"))(jax.random.key(1))
  theta = theta0 + u
  assert float(jnp.abs(u).max()) <= 0.3 + 1e-6
  assert bool(jnp.all((theta >= LOW - 1e-6) & (theta <= HIGH + 1e-6)))
  np.testing.assert_allclose(
      x[..., 0], warp.render_batch(prototypes, font, char, theta), atol=1e-5)
  assert float(jnp.abs(u).max()) > 0


def test_learned_manifold_attack_outputs_decoder_images_in_ball_and_box():
  d = 4
  dec_w = jax.random.normal(jax.random.key(0), (3, d, 36))
  decode = lambda z, cls: jax.nn.sigmoid(jnp.einsum("bd,bdp->bp", z, dec_w[cls])).reshape(
      -1, 6, 6, 1)
  f = random_linear(36, k=3, seed=4)
  z0 = jax.random.uniform(jax.random.key(1), (8, d), minval=-1.9, maxval=1.9)
  cls = jnp.arange(8) % 3
  origin = parametrisations.learned_origin(z0, cls, -2.0, 2.0)
  param = parametrisations.learned_manifold(decode)
  u, x, info = jax.jit(lambda k: A.run_attack(
      lambda im: f(im.reshape(8, -1)), k, origin, cls, param, norm="linf", eps=0.3,
      step=_adam(10), loss=A.make_loss("ce"), steps=10, init="uniform"))(jax.random.key(2))
  z = z0 + u
  assert float(jnp.abs(u).max()) <= 0.3 + 1e-6 and float(jnp.abs(z).max()) <= 2.0 + 1e-6
  np.testing.assert_allclose(x, decode(z, cls), atol=1e-6)
  ok = parametrisations.on_manifold_success(info, jnp.ones(8, bool), z)
  assert ok.shape == (8,) and bool(jnp.all(ok == info["success"]))
  far = z.at[0, 0].set(2.5)
  assert not bool(parametrisations.on_manifold_success(info | {"success": jnp.ones(8, bool)},
                                              jnp.ones(8, bool), far)[0])
  assert not bool(jnp.any(parametrisations.on_manifold_success(info, jnp.zeros(8, bool), z)))


def test_deformation_attack_is_a_warp_within_ranges(prototypes):
  x0 = jnp.asarray(prototypes.reshape(-1, 16, 16, 1))
  y = jnp.arange(6) % 3
  f = random_linear(256, k=3, seed=2)
  low, high = parametrisations.deformation_ranges(0.3)
  param = parametrisations.deformation(low, high)
  u, x, _ = jax.jit(lambda k: A.run_attack(
      lambda im: f(im.reshape(6, -1)), k, x0, y, param, norm="linf", eps=0.3,
      step=_adam(8), loss=A.make_loss("ce"), steps=8, init="uniform"))(jax.random.key(3))
  assert u.shape == (6, 6) and float(jnp.abs(u).max()) <= 0.3 + 1e-6
  theta = parametrisations.IDENTITY + u
  np.testing.assert_allclose(x[..., 0], warp.affine_warp(x0[..., 0], warp.theta_to_affine(theta)),
                             atol=1e-5)
  np.testing.assert_allclose(param.to_image(jnp.zeros((6, 6)), x0), x0, atol=1e-6)


def test_bad_ranges_are_refused():
  import pytest
  with pytest.raises(ValueError, match="identity"):
    parametrisations.deformation(np.full(6, 0.1), np.full(6, 0.2))
  with pytest.raises(ValueError, match="low must be <= high"):
    parametrisations.true_manifold(np.zeros((1, 1, 4, 4), np.float32), HIGH, LOW)


def test_ready_made_attacks_apply_the_papers_rule(prototypes):
  from rsec.manifold import paper_attacks as MA
  b = 6
  f = random_linear(256, k=3, seed=1)
  logits_fn = lambda x: f(x.reshape(x.shape[0], -1))
  font, char = np.arange(b) % 2, np.arange(b) % 3
  theta0 = jax.random.uniform(jax.random.key(0), (b, 6), minval=LOW, maxval=HIGH)
  u, x, info = jax.jit(lambda k: MA.true_manifold_attack(
      logits_fn, k, prototypes, font, char, theta0, LOW, HIGH, steps=5, restarts=2,
      lr=0.05))(jax.random.key(1))
  clean = jnp.argmax(logits_fn(warp.render_batch(prototypes, font, char, theta0)[..., None]), -1)
  np.testing.assert_array_equal(info["clean_correct"], clean == char)
  np.testing.assert_array_equal(info["success_valid"], info["success"] & (clean == char))
  np.testing.assert_allclose(info["theta"], theta0 + u, atol=1e-6)
  x0 = jnp.asarray(prototypes.reshape(-1, 16, 16, 1))
  low, high = parametrisations.deformation_ranges(0.3)
  u, _, info = MA.deformation_attack(logits_fn, jax.random.key(2), x0, jnp.arange(6) % 3, low,
                                     high, steps=3, restarts=1)
  assert info["theta"].shape == (6, 6) and float(jnp.abs(u).max()) <= 0.3 + 1e-6
