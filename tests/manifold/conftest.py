"""Small synthetic FONTS-like generators and classifiers for fast manifold tests."""
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter


def make_prototypes(fonts=2, chars=3, size=16, seed=0):
  """[F, C, size, size] smooth asymmetric glyphs in [0, 1]."""
  rng = np.random.default_rng(seed)
  out = np.zeros((fonts, chars, size, size), np.float32)
  for f in range(fonts):
    for c in range(chars):
      img = np.zeros((size, size))
      for _ in range(3):
        r0, c0 = rng.integers(4, size - 6, 2)
        img[r0:r0 + rng.integers(2, 5), c0:c0 + rng.integers(2, 6)] = 1.0
      img = gaussian_filter(img, 1.0)
      out[f, c] = img / img.max()
  return out


@pytest.fixture(scope="session")
def prototypes():
  return make_prototypes()
