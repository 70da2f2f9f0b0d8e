"""VAE-GAN modules, the phase transposed conv, and the stacked multi-model GAN step."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsec import parallel
from rsec.manifold.vaegan_step import (class_sampler, init_vaegan_state, kl_to_prior,
                                           make_vaegan_step)
from rsec.training.steps import make_multi_step
from rsec.models.layers_transpose import PatchConvTranspose, transposed_output_size
from rsec.models.vaegan import make_vaegan
from rsec.training.state import make_optimizer


def test_transposed_conv_matches_lax_values_and_gradients():
  for k, s, p, n in [(4, 2, 1, 7), (3, 2, 0, 3), (5, 3, 1, 4), (1, 2, 0, 3)]:
    m = PatchConvTranspose(5, (k, k), (s, s), p)
    x = jax.random.normal(jax.random.key(0), (2, n, n + 1, 3))
    v = jax.tree.map(lambda a: a + 0.1, m.init(jax.random.key(1), x))  # non-zero bias too

    def ref(a):
      return jax.lax.conv_transpose(a, v["params"]["kernel"], (s, s),
                                    [(k - 1 - p, k - 1 - p)] * 2,
                                    dimension_numbers=("NHWC", "HWIO", "NHWC")) + v["params"]["bias"]

    @jax.jit
    def both(a):
      ours = lambda b: m.apply(v, b)
      g = lambda f: jax.grad(lambda b: jnp.sum(jnp.sin(f(b))))(a)
      return ours(a), ref(a), g(ours), g(ref)

    y, r, gy, gr = both(x)
    assert y.shape == (2, transposed_output_size(n, k, s, p),
                       transposed_output_size(n + 1, k, s, p), 5)
    np.testing.assert_allclose(y, r, atol=1e-5)
    np.testing.assert_allclose(gy, gr, atol=1e-4)


def test_bad_padding_is_refused():
  with pytest.raises(ValueError, match="padding"):
    PatchConvTranspose(2, (3, 3), (2, 2), 3).init(jax.random.key(0), jnp.zeros((1, 3, 3, 1)))


def test_module_shapes():
  size = 28
  enc, dec, disc = make_vaegan(10, size, (4, 4, 4), (4, 4, 4))

  @jax.jit
  def run(x):
    mu, logvar = enc.apply(enc.init(jax.random.key(0), x), x)
    img = dec.apply(dec.init(jax.random.key(1), mu), mu)
    return mu, logvar, img, disc.apply(disc.init(jax.random.key(2), x), x)

  mu, logvar, img, logit = run(jax.random.uniform(jax.random.key(0), (3, size, size, 1)))
  assert mu.shape == logvar.shape == (3, 10) and logit.shape == (3,)
  assert img.shape == (3, size, size, 1) and 0 < float(img.min()) and float(img.max()) < 1
  with pytest.raises(ValueError, match="latent_dim"):
    make_vaegan(0, size)


def test_kl_is_zero_at_the_prior():
  assert float(jnp.abs(kl_to_prior(jnp.zeros((2, 4)), jnp.zeros((2, 4)))).max()) == 0.0
  assert bool(jnp.all(kl_to_prior(jnp.ones((2, 4)), jnp.zeros((2, 4))) > 0))


def _blobs(n, size=12, seed=0):
  """Two classes of images: a bright square at one of two places, plus a little noise."""
  rng = np.random.default_rng(seed)
  y = np.arange(n) % 2
  x = rng.random((n, size, size, 1)).astype(np.float32) * 0.1
  for i, c in enumerate(y):
    x[i, 2 + 5 * c:6 + 5 * c, 3:8] = 0.9
  return x, y.astype(np.int32)


def _tiny_state(models=3):
  mods = make_vaegan(4, 12, (4, 8, 8), (4, 4, 4))
  tx = make_optimizer(0.01, 10, lr_decay=0.9, b1=0.5, b2=0.9, weight_decay=1e-4)
  return init_vaegan_state(mods, tx, jax.random.key(0), models, (12, 12, 1))


@jax.jit
def _recon_errors(state, x, y):
  from rsec.manifold import learned
  out = []
  for m in range(3):
    rec = learned.decode(state, learned.encode_mean(state, x, m), m)
    err = jnp.mean(jnp.abs(rec - x), axis=(1, 2, 3))
    out.append(jnp.mean(err) if m == 2 else jnp.sum(err * (y == m)) / jnp.sum(y == m))
  return jnp.stack(out)


def test_training_reduces_reconstruction_error_and_compiles_once():
  x, y = _blobs(64)
  sampler = class_sampler(y, 2, 8, seed=0)
  state = _tiny_state()
  before = np.asarray(_recon_errors(state, x, y))
  mesh = parallel.data_mesh()
  step = chex.assert_max_traces(make_vaegan_step(3.0, 1.0), n=1)
  multi = make_multi_step(step, mesh, batch_axis=2)
  state = parallel.replicate(state, mesh)
  for s0 in range(0, 40, 20):
    steps = np.arange(s0, s0 + 20, dtype=np.int32)
    batches = parallel.shard_batch(
        {"image": x[np.stack([sampler.indices(int(s)) for s in steps])]}, mesh, axis=2)
    state, metrics = multi(state, batches, jax.random.key(1), steps, steps >= 0)
  assert metrics["l1"].shape == (20, 3)
  assert np.all(np.asarray(metrics["finite"]) == 1)
  after = np.asarray(_recon_errors(jax.device_get(state), x, y))
  assert np.all(after < 0.7 * before), (before, after)
  assert int(state.step) == 40


def test_sampler_gives_each_model_its_class():
  y = np.repeat(np.arange(3), 10).astype(np.int32)
  s = class_sampler(y, 3, 4, seed=0)
  idx = s.indices(5)
  assert idx.shape == (4, 4)
  for m in range(3):
    assert np.all(y[idx[m]] == m)
  np.testing.assert_array_equal(idx, class_sampler(y, 3, 4, seed=0).indices(5))
  with pytest.raises(ValueError, match="batch_size"):
    class_sampler(y, 3, 11, seed=0)
