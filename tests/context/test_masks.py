"""Hole masks, naive fills and PSNR."""
import jax
import jax.numpy as jnp
import numpy as np

from rsec.context import masks


def test_dilate_square():
  m = jnp.zeros((1, 9, 9)).at[0, 4, 4].set(1)
  d = np.asarray(masks.dilate(m, 2))
  assert d.sum() == 25 and d[0, 2:7, 2:7].all()
  np.testing.assert_array_equal(masks.dilate(m, 0), m)


def test_random_masks_are_partial():
  for fn in (masks.random_boxes, masks.random_blobs):
    m = np.asarray(fn(jax.random.key(0), 16, 32))
    area = m.mean((1, 2))
    assert m.shape == (16, 32, 32) and (area > 0.005).all() and (area < 0.6).all()


def test_training_holes_use_other_images(small_scenes):
  d = small_scenes
  m = np.asarray(masks.training_holes(jax.random.key(1), jnp.asarray(d["masks"][:16]),
                                      jnp.asarray(d["shown"][:16]), 32, object_fraction=1.0,
                                      dilation=1))
  assert m.shape == (16, 32, 32) and (m.sum((1, 2)) > 0).all()


def test_fills_keep_known_pixels_and_psnr():
  x = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3))
  m = jnp.zeros((2, 16, 16)).at[:, 4:9, 4:9].set(1)
  for fill in (masks.mean_fill(x, m), masks.blur_fill(x, m, 20)):
    np.testing.assert_allclose(np.asarray(fill)[:, :4], np.asarray(x)[:, :4])
  # A flat image is filled exactly by both; a PSNR of a 0.1 error is 20 dB.
  flat = jnp.full((2, 16, 16, 3), 0.3)
  np.testing.assert_allclose(masks.blur_fill(flat, m, 5), flat, atol=1e-6)
  p = masks.psnr_in_hole(flat + 0.1 * m[..., None], flat, m)
  np.testing.assert_allclose(p, [20.0, 20.0], rtol=1e-4)
