"""The differentiable FONTS generator: affine parametrisation, warp semantics, render."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsec.data import warp


def grid_sample_reference(images: np.ndarray, affine: np.ndarray) -> np.ndarray:
  """NumPy transcription of torch affine_grid + grid_sample(bilinear, zeros, align_corners=False)."""
  n, h, w = images.shape
  out = np.zeros((n, h, w), np.float64)
  for b in range(n):
    for i in range(h):
      for j in range(w):
        x = (2 * j + 1) / w - 1  # affine_grid base grid
        y = (2 * i + 1) / h - 1
        gx = affine[b, 0, 0] * x + affine[b, 0, 1] * y + affine[b, 0, 2]
        gy = affine[b, 1, 0] * x + affine[b, 1, 1] * y + affine[b, 1, 2]
        ix = ((gx + 1) * w - 1) / 2  # grid_sample unnormalize
        iy = ((gy + 1) * h - 1) / 2
        x0, y0 = int(np.floor(ix)), int(np.floor(iy))
        total = 0.0
        for yy, wy in ((y0, y0 + 1 - iy), (y0 + 1, iy - y0)):
          for xx, wx in ((x0, x0 + 1 - ix), (x0 + 1, ix - x0)):
            if 0 <= yy < h and 0 <= xx < w:
              total += images[b, yy, xx] * wx * wy
        out[b, i, j] = total
  return out


def random_thetas(key, n, spread=0.5):
  noise = jax.random.normal(key, (n, 6)) * jnp.array([0.5, 0.5, 0.3, 0.3, 0.3, 1.0]) * spread
  return jnp.asarray(warp.IDENTITY_THETA) + noise


def test_identity_theta_is_exact_identity_matrix():
  a = np.asarray(warp.theta_to_affine(jnp.asarray(warp.IDENTITY_THETA)))
  np.testing.assert_array_equal(a, [[1, 0, 0], [0, 1, 0]])
  assert warp.theta_to_affine(jnp.zeros((3, 4, 6))).shape == (3, 4, 2, 3)


def test_composition_order():
  rot, sx, sy, s, tx, ty = 0.3, 0.2, -0.1, 1.3, 0.05, -0.2
  a = np.asarray(warp.theta_to_affine(jnp.array([tx, ty, sx, sy, s, rot])), np.float64)
  r = np.array([[np.cos(rot), -np.sin(rot)], [np.sin(rot), np.cos(rot)]])
  shear = np.array([[1, sx], [sy, 1]])
  np.testing.assert_allclose(a[:, :2], r @ shear * s, atol=1e-6)
  np.testing.assert_allclose(a[:, 2], [tx, ty], atol=1e-7)


@pytest.mark.parametrize("spread", [0.3, 1.5])
def test_warp_matches_grid_sample_reference(spread):
  key_img, key_theta = jax.random.split(jax.random.PRNGKey(0))
  images = jax.random.uniform(key_img, (6, 9, 7))  # non-square catches H/W mix-ups
  affine = warp.theta_to_affine(random_thetas(key_theta, 6, spread))
  want = grid_sample_reference(np.asarray(images, np.float64), np.asarray(affine, np.float64))
  np.testing.assert_allclose(np.asarray(warp.affine_warp(images, affine)), want, atol=2e-5)
  np.testing.assert_allclose(np.asarray(warp.affine_warp_gather(images, affine)), want, atol=2e-5)


def test_fast_and_reference_agree_far_outside_and_at_pixel_centres():
  images = jax.random.uniform(jax.random.PRNGKey(1), (5, 28, 28))
  thetas = jnp.array([
      [0.0, 0.0, 0.0, 0.0, 1.0, 0.0],     # exact pixel centres
      [2 / 28, -4 / 28, 0, 0, 1.0, 0.0],   # integer pixel shifts
      [5.0, -7.0, 0.0, 0.0, 1.0, 0.0],    # entirely outside
      [0.0, 0.0, 0.0, 0.0, 40.0, 0.0],    # huge zoom-out, mostly outside
      [0.3, 0.1, 0.4, -0.4, 0.7, 2.0],
  ])
  affine = warp.theta_to_affine(thetas)
  fast = jax.jit(warp.affine_warp)(images, affine)
  ref = jax.jit(warp.affine_warp_gather)(images, affine)
  np.testing.assert_allclose(np.asarray(fast), np.asarray(ref), atol=1e-5)
  np.testing.assert_array_equal(np.asarray(fast[0]), np.asarray(images[0]))
  # tx = 2/W is one pixel: output (i, j) reads input (i - 2, j + 1), so the content
  # moves 1 px left and 2 px down.
  np.testing.assert_allclose(np.asarray(fast[1, 2:, :-1]), np.asarray(images[1, :-2, 1:]), atol=1e-6)
  assert float(jnp.abs(fast[2]).max()) == 0.0


def test_identity_render_reproduces_prototypes(prototypes):
  images = prototypes.images
  f, c = images.shape[:2]
  fonts = jnp.repeat(jnp.arange(f, dtype=jnp.int32), c)
  chars = jnp.tile(jnp.arange(c, dtype=jnp.int32), f)
  thetas = jnp.tile(jnp.asarray(warp.IDENTITY_THETA), (f * c, 1))
  out = warp.render_batch(images, fonts, chars, thetas)
  np.testing.assert_allclose(np.asarray(out), np.asarray(images).reshape(-1, *images.shape[2:]),
                             atol=1e-6)
  one = warp.render(images, 3, 7, warp.IDENTITY_THETA)
  np.testing.assert_allclose(np.asarray(one), np.asarray(images[3, 7]), atol=1e-6)


def test_grad_matches_finite_differences():
  """Bilinear sampling is piecewise linear in theta; on a smooth image its kinks are
  small, so central differences must match the autodiff gradient closely."""
  yy, xx = np.mgrid[0:28, 0:28]
  blob = np.exp(-((xx - 12.5) ** 2 / 30.0 + (yy - 15.0) ** 2 / 18.0)).astype(np.float32)
  images = jnp.asarray(blob)[None, None]
  weights = jax.random.normal(jax.random.PRNGKey(2), (28, 28))
  theta0 = jnp.array([0.07, -0.05, 0.12, -0.08, 0.93, 0.21])

  def loss(theta):
    return jnp.sum(warp.render(images, 0, 0, theta) * weights)

  grad = np.asarray(jax.jit(jax.grad(loss))(theta0), np.float64)
  eps = 1e-3
  fd = []
  for k in range(6):
    e = jnp.zeros(6).at[k].set(eps)
    fd.append((float(loss(theta0 + e)) - float(loss(theta0 - e))) / (2 * eps))
  np.testing.assert_allclose(grad, fd, rtol=1e-2, atol=1e-2 * np.abs(fd).max())
  assert np.all(np.abs(grad) > 1e-3)


def test_grad_at_identity_is_not_zero(prototypes):
  """At pixel centres the one-sided derivative is used (a |d| tent would give 0)."""
  def loss(theta):
    return jnp.sum(warp.render(prototypes.images, 0, 0, theta) ** 2)
  g = jax.grad(loss)(jnp.asarray(warp.IDENTITY_THETA))
  assert float(jnp.abs(g[:2]).max()) > 1.0


def test_jit_and_vmap(prototypes):
  key = jax.random.PRNGKey(3)
  n = 8
  fonts = jax.random.randint(key, (n,), 0, prototypes.num_fonts, jnp.int32)
  chars = jnp.arange(n, dtype=jnp.int32) % prototypes.num_classes
  thetas = random_thetas(key, n)
  eager = warp.render_batch(prototypes.images, fonts, chars, thetas)
  jitted = jax.jit(warp.render_batch)(prototypes.images, fonts, chars, thetas)
  vmapped = jax.vmap(warp.render, in_axes=(None, 0, 0, 0))(prototypes.images, fonts, chars, thetas)
  np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), atol=1e-5)
  np.testing.assert_allclose(np.asarray(vmapped), np.asarray(eager), atol=1e-5)
  glyphs = prototypes.images[fonts, chars]
  affine = warp.theta_to_affine(thetas)
  per_image = jax.jit(jax.vmap(warp.affine_warp))(glyphs, affine)
  np.testing.assert_allclose(np.asarray(per_image), np.asarray(eager), atol=1e-5)
  jac = jax.vmap(jax.grad(lambda t, g: jnp.sum(warp.affine_warp(g, warp.theta_to_affine(t)))))(
      thetas, glyphs)
  assert jac.shape == (n, 6) and bool(jnp.all(jnp.isfinite(jac)))


def test_warp_broadcasting():
  image = jax.random.uniform(jax.random.PRNGKey(4), (10, 12))
  affine = warp.theta_to_affine(random_thetas(jax.random.PRNGKey(5), 3))
  out = warp.affine_warp(image, affine)
  assert out.shape == (3, 10, 12)
  np.testing.assert_allclose(np.asarray(out[1]), np.asarray(warp.affine_warp(image, affine[1])),
                             atol=1e-6)
  assert warp.affine_warp(jnp.zeros((2, 3, 10, 12)), affine[:1]).shape == (2, 3, 10, 12)


def test_validation_errors(prototypes):
  images = prototypes.images
  f, c = images.shape[:2]
  ok_fonts = jnp.zeros(2, jnp.int32)
  ok_theta = jnp.tile(jnp.asarray(warp.IDENTITY_THETA), (2, 1))
  with pytest.raises(ValueError, match=r"thetas must have shape \(2, 6\)"):
    warp.render_batch(images, ok_fonts, ok_fonts, ok_theta[:, :5])
  with pytest.raises(ValueError, match="thetas has 1 non-finite"):
    warp.render_batch(images, ok_fonts, ok_fonts, ok_theta.at[1, 2].set(jnp.nan))
  with pytest.raises(ValueError, match=rf"fonts must lie in \[0, {f}\)"):
    warp.render_batch(images, ok_fonts.at[0].set(f), ok_fonts, ok_theta)
  with pytest.raises(ValueError, match=rf"chars must lie in \[0, {c}\)"):
    warp.render_batch(images, ok_fonts, ok_fonts.at[1].set(-1), ok_theta)
  with pytest.raises(ValueError, match="chars must be an integer array"):
    warp.render_batch(images, ok_fonts, ok_fonts.astype(jnp.float32), ok_theta)
  with pytest.raises(ValueError, match=r"chars must have shape \(2\)"):
    warp.render_batch(images, ok_fonts, jnp.zeros(3, jnp.int32), ok_theta)
  with pytest.raises(ValueError, match="prototype_images must have shape"):
    warp.render_batch(images[0], ok_fonts, ok_fonts, ok_theta)
  with pytest.raises(ValueError, match=r"theta must have shape \(6\)"):
    warp.render(images, 0, 0, jnp.zeros(7))
  with pytest.raises(ValueError, match=r"font must lie in \[0"):
    warp.render(images, f + 3, 0, warp.IDENTITY_THETA)
  with pytest.raises(ValueError, match="theta must be a floating-point array"):
    warp.validate_theta(np.zeros(6, np.int32))
  with pytest.raises(ValueError, match="theta has 1 non-finite"):
    warp.validate_theta(np.array([0, 0, 0, 0, np.inf, 0], np.float32))
  with pytest.raises(ValueError, match=r"affine must have shape \(..., 2, 3\)"):
    warp.affine_warp(jnp.zeros((2, 8, 8)), jnp.zeros((2, 3, 3)))
  with pytest.raises(ValueError, match="affine has 1 non-finite"):
    warp.affine_warp(jnp.zeros((1, 8, 8)), jnp.zeros((1, 2, 3)).at[0, 0, 0].set(jnp.nan))
  with pytest.raises(ValueError, match="do not broadcast"):
    warp.affine_warp(jnp.zeros((2, 8, 8)), jnp.zeros((3, 2, 3)))
  with pytest.raises(ValueError, match="images must be a floating-point array"):
    warp.affine_warp(jnp.zeros((2, 8, 8), jnp.int32), jnp.zeros((2, 2, 3)))
  # Under jit the value checks are skipped (shapes are still checked).
  nan_theta = ok_theta.at[0, 0].set(jnp.nan)
  out = jax.jit(warp.render_batch)(images, ok_fonts, ok_fonts, nan_theta)
  assert out.shape == (2, 28, 28)
