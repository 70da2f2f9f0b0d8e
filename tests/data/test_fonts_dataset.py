"""FONTS sampling: theta presets, per-index determinism, balance, splits, sample grid."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from rsec.data import fonts_dataset as fd
from rsec.data import warp


def test_theta_ranges():
  low, high = fd.THETA_RANGES["hard"]
  np.testing.assert_allclose(low, [-0.2, -0.2, -0.5, -0.5, 0.75, -math.pi / 2], rtol=1e-6)
  np.testing.assert_allclose(high, [0.2, 0.2, 0.5, 0.5, 1.15, math.pi / 2], rtol=1e-6)
  low, high = fd.THETA_RANGES["easy"]
  np.testing.assert_allclose(low, [-0.1, -0.1, -0.2, -0.2, 0.9, -math.pi / 6], rtol=1e-6)
  np.testing.assert_allclose(high, [0.1, 0.1, 0.2, 0.2, 1.1, math.pi / 6], rtol=1e-6)
  low, high = fd.THETA_RANGES["moderate"]
  np.testing.assert_allclose(low, [-0.2, -0.2, -0.4, -0.4, 0.85, -math.pi / 3], rtol=1e-6)
  np.testing.assert_allclose(high, [0.2, 0.2, 0.4, 0.4, 1.15, math.pi / 3], rtol=1e-6)
  np.testing.assert_array_equal(fd.THETA_RANGES["none"][0], warp.IDENTITY_THETA)


@pytest.mark.parametrize("difficulty", ["easy", "moderate", "hard"])
def test_sample_theta_in_range(difficulty):
  theta = np.asarray(fd.sample_theta(jax.random.PRNGKey(0), 2000, difficulty))
  low, high = fd.THETA_RANGES[difficulty]
  assert theta.shape == (2000, 6) and theta.dtype == np.float32
  assert np.all(theta >= low) and np.all(theta <= high)
  # Uniform: each coordinate fills its range.
  span = (theta.max(0) - theta.min(0)) / (high - low)
  assert np.all(span > 0.95)


def test_examples_shapes_and_labels(prototypes):
  key = fd.split_key(0, "train")
  out = fd.fonts_examples(key, prototypes, jnp.arange(25, dtype=jnp.int32))
  assert out["image"].shape == (25, 28, 28, 1) and out["image"].dtype == jnp.float32
  assert out["label"].dtype == jnp.int32 and out["font"].dtype == jnp.int32
  assert out["theta"].shape == (25, 6) and out["theta"].dtype == jnp.float32
  np.testing.assert_array_equal(out["label"], np.arange(25) % 10)
  assert 0 <= int(out["font"].min()) and int(out["font"].max()) < prototypes.num_fonts
  low, high = fd.THETA_RANGES["hard"]
  assert np.all(np.asarray(out["theta"]) >= low) and np.all(np.asarray(out["theta"]) <= high)
  image = np.asarray(out["image"])
  assert image.min() >= 0.0 and image.max() <= 1.0 + 1e-6
  # Each image is the generator applied to its (font, label, theta).
  again = warp.render_batch(prototypes.images, out["font"], out["label"], out["theta"])
  np.testing.assert_allclose(image[..., 0], np.asarray(again), atol=1e-5)


def test_example_depends_only_on_its_index(prototypes):
  key = fd.split_key(3, "train")
  run = jax.jit(fd.fonts_examples, static_argnames="difficulty")
  full = run(key, prototypes, jnp.arange(40, dtype=jnp.int32))
  some = run(key, prototypes, jnp.array([39, 5, 17, 5], jnp.int32))
  for k in full:
    np.testing.assert_allclose(np.asarray(some[k]), np.asarray(full[k])[[39, 5, 17, 5]], atol=1e-6)


def test_prefix_stability_and_balance(prototypes):
  big = fd.fonts_split(prototypes, "train", 53, seed=1, chunk=16)
  small = fd.fonts_split(prototypes, "train", 21, seed=1)
  tail = fd.fonts_split(prototypes, "train", 13, seed=1, start=40, chunk=5)
  for k in big:
    assert isinstance(big[k], np.ndarray)
    np.testing.assert_allclose(small[k], big[k][:21], atol=1e-6)
    np.testing.assert_allclose(tail[k], big[k][40:], atol=1e-6)
  for n in range(1, 54):
    counts = np.bincount(big["label"][:n], minlength=10)
    assert counts.max() - counts.min() <= 1


def test_splits_and_seeds_differ(prototypes):
  train = fd.fonts_split(prototypes, "train", 50, seed=0)
  test = fd.fonts_split(prototypes, "test", 50, seed=0)
  other = fd.fonts_split(prototypes, "train", 50, seed=1)
  np.testing.assert_array_equal(train["label"], test["label"])
  for a, b in ((train, test), (train, other)):
    assert not np.allclose(a["theta"], b["theta"])
    assert np.mean(a["font"] == b["font"]) < 0.5
  keys = [fd.split_key(0, s) for s in ("train", "validation", "test")] + [fd.split_key(1, "train")]
  raw = {tuple(np.asarray(jax.random.key_data(k)).ravel().tolist()) for k in keys}
  assert len(raw) == 4


def test_difficulty_none_gives_prototypes(prototypes):
  out = fd.fonts_split(prototypes, "test", 10, difficulty="none")
  want = np.asarray(prototypes.images)[out["font"], out["label"]]
  np.testing.assert_allclose(out["image"][..., 0], want, atol=1e-6)


def test_validation_errors(prototypes):
  key = fd.split_key(0, "train")
  with pytest.raises(ValueError, match="unknown difficulty 'medium'"):
    fd.sample_theta(key, 3, "medium")
  with pytest.raises(ValueError, match="n must be an integer >= 1"):
    fd.sample_theta(key, 0)
  with pytest.raises(ValueError, match="unknown split 'dev'"):
    fd.split_key(0, "dev")
  with pytest.raises(ValueError, match="seed must be an integer >= 0"):
    fd.split_key(-1, "train")
  with pytest.raises(ValueError, match="n must be an integer >= 1"):
    fd.fonts_split(prototypes, "train", 0)
  with pytest.raises(ValueError, match="start must be an integer >= 0"):
    fd.fonts_split(prototypes, "train", 5, start=-2)
  with pytest.raises(ValueError, match="unknown difficulty"):
    fd.fonts_split(prototypes, "train", 5, difficulty="impossible")
  with pytest.raises(ValueError, match="indices must be >= 0"):
    fd.fonts_examples(key, prototypes, jnp.array([0, -1], jnp.int32))
  with pytest.raises(ValueError, match="indices must be an integer array"):
    fd.fonts_examples(key, prototypes, jnp.array([0.0, 1.0]))
  with pytest.raises(ValueError, match=r"indices must have shape \(\*\)"):
    fd.fonts_examples(key, prototypes, jnp.zeros((2, 2), jnp.int32))
  with pytest.raises(ValueError, match="prototypes.images must have shape"):
    fd.fonts_examples(key, prototypes.images[0], jnp.arange(3))


def test_sample_grid(prototypes, tmp_path):
  path = fd.save_sample_grid(prototypes, str(tmp_path / "grid" / "fonts.png"), num_fonts=4)
  with Image.open(path) as im:
    assert im.format == "PNG"
    assert im.size[0] > 200 and im.size[1] > 400  # 10 rows x 4 columns of digits
  with pytest.raises(ValueError, match="num_fonts must be an integer >= 1"):
    fd.save_sample_grid(prototypes, str(tmp_path / "x.png"), num_fonts=0)
