"""Distances to manifolds: engine projections, NN+PCA residuals, tangent fractions."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsec.data import warp
from rsec.manifold import distances

LOW = np.array([-0.1, -0.1, -0.1, -0.1, 0.9, -0.3], np.float32)
HIGH = np.array([0.1, 0.1, 0.1, 0.1, 1.1, 0.3], np.float32)


@pytest.fixture(scope="module")
def projected(prototypes):
  b = 4
  font, char = np.arange(b) % 2, np.arange(b) % 3
  theta0 = np.asarray(jax.random.uniform(jax.random.key(0), (b, 6), minval=LOW, maxval=HIGH))
  x0 = warp.render_batch(prototypes, font, char, theta0)[..., None]
  noisy = x0 + 0.3 * jax.random.normal(jax.random.key(1), x0.shape)
  both = jnp.concatenate([x0, noisy])
  run = jax.jit(lambda k, x: distances.project_true(
      k, x, np.tile(font, 2), np.tile(char, 2), prototypes, LOW, HIGH, steps=150, restarts=4,
      lr=0.01))
  theta, x_star, d = run(jax.random.key(2), both)
  return dict(font=font, char=char, theta0=theta0, x0=x0, theta=theta, x_star=x_star, d=d, b=b)


def test_true_projection_recovers_on_manifold_points(projected, prototypes):
  b = projected["b"]
  d = np.asarray(projected["d"])
  assert np.all(d[:b] < 0.05 * np.linalg.norm(np.asarray(projected["x0"]).reshape(b, -1), axis=1))
  # Found theta renders the same image as theta0 (theta itself may differ by symmetries).
  re = warp.render_batch(prototypes, projected["font"], projected["char"], projected["theta"][:b])
  np.testing.assert_allclose(re, projected["x0"][..., 0], atol=0.05)
  both = np.array(jnp.concatenate([projected["x0"]] * 2))
  both[b:] = np.nan  # only the on-manifold half is checked below
  np.testing.assert_allclose(d[:b], np.linalg.norm(
      (np.asarray(projected["x_star"]) - both)[:b].reshape(b, -1), axis=1), atol=1e-5)
  assert np.all((projected["theta"] >= LOW - 1e-6) & (projected["theta"] <= HIGH + 1e-6))


def test_noisy_images_are_off_the_manifold(projected):
  b = projected["b"]
  d = np.asarray(projected["d"])
  assert np.all(d[b:] > 10 * d[:b].max())


def test_all_fonts_takes_the_closest_font(prototypes):
  theta0 = np.tile(np.array([[0.05, 0.0, 0.0, 0.0, 1.0, 0.1]], np.float32), (2, 1))
  font, char = np.array([1, 0]), np.array([2, 1])
  x0 = warp.render_batch(prototypes, font, char, theta0)[..., None]
  f, theta, d = jax.jit(lambda k: distances.project_true_all_fonts(
      k, x0, char, prototypes, LOW, HIGH, steps=100, restarts=2, lr=0.01))(jax.random.key(0))
  np.testing.assert_array_equal(f, font)
  assert float(d.max()) < 0.3


def test_learned_projection_finds_a_decoder_point():
  w = jax.random.normal(jax.random.key(0), (2, 3, 25))
  decode = lambda z, c: jax.nn.sigmoid(jnp.einsum("bd,bdp->bp", z, w[c])).reshape(-1, 5, 5, 1)
  z0 = jnp.array([[0.5, -1.0, 1.5], [-0.3, 0.2, 0.9]])
  cls = jnp.array([0, 1])
  x = decode(z0, cls)
  z, x_star, d = jax.jit(lambda k: distances.project_learned(
      k, x, cls, decode, jnp.zeros_like(z0), steps=200, restarts=3, lr=0.05))(jax.random.key(1))
  assert float(d.max()) < 0.02 and float(jnp.abs(z).max()) <= 2.0 + 1e-6
  np.testing.assert_allclose(x_star, decode(z, cls), atol=1e-6)


def test_nn_pca_residual_is_zero_on_training_points():
  rng = np.random.default_rng(0)
  train = rng.random((200, 8, 8, 1)).astype(np.float32)
  local = distances.PCANeighbours(train, n_components=10, k=20)
  d_train = local.distance(train[:5])
  d_new = local.distance(rng.random((5, 8, 8, 1)).astype(np.float32))
  assert np.all(d_train < 1e-3) and np.all(d_new > 0.1)
  with pytest.raises(ValueError, match="k must be"):
    distances.PCANeighbours(train, n_components=10, k=500)


def test_tangent_fraction_along_and_orthogonal_to_the_jacobian(prototypes):
  font, char = jnp.array([0, 1]), jnp.array([1, 2])
  theta0 = jnp.array([[0.05, -0.02, 0.1, 0.0, 1.05, 0.2], [0.0, 0.0, 0.0, 0.0, 1.0, 0.0]])
  protos = jnp.asarray(prototypes)
  render = lambda t, f, c: warp.warp_single(protos[f, c], warp.theta_to_affine(t))
  jac = jax.vmap(lambda t, f, c: jax.jacfwd(render)(t, f, c))(theta0, font, char)  # [B,H,W,6]
  along = jnp.einsum("bhwk,k->bhw", jac, jnp.array([1.0, -2.0, 0.5, 0.3, 1.0, 0.7]))
  frac_along = distances.tangent_fraction(prototypes, font, char, theta0, along)
  noise = jax.random.normal(jax.random.key(0), along.shape)
  q, _ = jnp.linalg.qr(jac.reshape(2, 256, 6))
  orth = noise.reshape(2, 256) - jnp.einsum("bdk,bk->bd", q, jnp.einsum("bdk,bd->bk", q,
                                                                         noise.reshape(2, 256)))
  frac_orth = distances.tangent_fraction(prototypes, font, char, theta0, orth.reshape(2, 16, 16))
  assert float(frac_along.max()) < 1e-3
  assert float(frac_orth.min()) > 0.999
