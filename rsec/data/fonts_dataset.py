"""FONTS examples: (font, class, theta) sampled per index and rendered on the fly.

Example i of a split is a deterministic function of (split key, i): its label is
i mod num_classes (so every prefix of a split is class-balanced to within one
example), and its font and affine parameters theta are drawn from
`jax.random.fold_in(key, i)`. "The first N training examples" therefore means the
same images for every N, batch size and device count.
"""
from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np

from rsec import checks
from rsec.data import warp
from rsec.data.fonts import Prototypes

_PI = math.pi


def _box(translation: float, shear: float, scale: tuple[float, float],
         rotation: float) -> tuple[np.ndarray, np.ndarray]:
  low = [-translation, -translation, -shear, -shear, scale[0], -rotation]
  high = [translation, translation, shear, shear, scale[1], rotation]
  return np.array(low, np.float32), np.array(high, np.float32)


# name -> (low [6], high [6]) in theta order (tx, ty, shear x, shear y, scale,
# rotation [rad]); translations in normalised [-1, 1] image coordinates.
THETA_RANGES: dict[str, tuple[np.ndarray, np.ndarray]] = {
    "none": (warp.IDENTITY_THETA.copy(), warp.IDENTITY_THETA.copy()),
    "easy": _box(0.1, 0.2, (0.9, 1.1), _PI / 6),
    "moderate": _box(0.2, 0.4, (0.85, 1.15), 2 * _PI / 6),
    "hard": _box(0.2, 0.5, (0.75, 1.15), _PI / 2),
}
# Distinct constants folded into the seed's key: disjoint streams per split.
SPLIT_IDS = {"train": 0x7EA1, "validation": 0x7A11, "test": 0x7E57}


def theta_range(difficulty: str) -> tuple[np.ndarray, np.ndarray]:
  """(low [6], high [6]) float32 bounds of a THETA_RANGES preset."""
  checks.check_choice("difficulty", difficulty, THETA_RANGES)
  low, high = THETA_RANGES[difficulty]
  return low.copy(), high.copy()


def sample_theta(key: jax.Array, n: int, difficulty: str = "hard") -> jax.Array:
  """[n, 6] float32 thetas, uniform in the `difficulty` box."""
  n = checks.check_positive_int("n", n)
  low, high = theta_range(difficulty)
  return jax.random.uniform(key, (n, warp.THETA_DIM), jnp.float32, low, high)


def split_key(seed: int, split: str) -> jax.Array:
  """PRNG key of a split; different splits (and seeds) give disjoint streams."""
  seed = checks.check_positive_int("seed", seed, minimum=0)
  checks.check_choice("split", split, SPLIT_IDS)
  return jax.random.fold_in(jax.random.PRNGKey(seed), SPLIT_IDS[split])


def _prototype_images(prototypes: Prototypes | jax.Array) -> jax.Array:
  images = prototypes.images if isinstance(prototypes, Prototypes) else prototypes
  checks.check_shape("prototypes.images", images, (None, None, None, None))
  checks.check_float_array("prototypes.images", images)
  return images


def fonts_examples(key: jax.Array, prototypes: Prototypes | jax.Array, indices: jax.Array,
                   difficulty: str = "hard") -> dict[str, jax.Array]:
  """Renders the examples with the given indices.

  Pure and jittable (pass `difficulty` as a static argument); value checks on
  `indices` are skipped under tracing.

  Args:
    key: the split's key (see `split_key`).
    prototypes: `Prototypes` or its images [F, C, H, W].
    indices: [n] non-negative int example indices.
    difficulty: a THETA_RANGES name.

  Returns:
    dict(image [n, H, W, 1] float32 in [0, 1], label [n] int32 = index mod C,
    font [n] int32, theta [n, 6] float32).
  """
  images = _prototype_images(prototypes)
  low, high = theta_range(difficulty)
  checks.check_shape("indices", indices, (None,))
  dtype = getattr(indices, "dtype", None)
  if dtype is None or not np.issubdtype(np.dtype(dtype), np.integer):
    raise ValueError(f"indices must be an integer array, got dtype {dtype}")
  if not checks.is_tracing(indices) and np.size(indices) and np.min(indices) < 0:
    raise ValueError(f"indices must be >= 0, got minimum {np.min(indices)}")
  num_fonts, num_classes = images.shape[:2]
  indices = jnp.asarray(indices).astype(jnp.int32)

  def draw(i):
    font_key, theta_key = jax.random.split(jax.random.fold_in(key, i))
    font = jax.random.randint(font_key, (), 0, num_fonts, jnp.int32)
    theta = jax.random.uniform(theta_key, (warp.THETA_DIM,), jnp.float32, low, high)
    return font, theta

  fonts, thetas = jax.vmap(draw)(indices)
  labels = indices % num_classes
  rendered = warp.render_fast(images, fonts, labels, warp.theta_to_affine(thetas))
  return dict(image=rendered[..., None], label=labels, font=fonts, theta=thetas)


_fonts_examples_jit = jax.jit(fonts_examples, static_argnames=("difficulty",))


def fonts_split(prototypes: Prototypes, split: str, n: int, seed: int = 0,
                difficulty: str = "hard", start: int = 0,
                chunk: int = 8192) -> dict[str, np.ndarray]:
  """Examples [start, start + n) of a split, as host numpy arrays.

  Args:
    prototypes: the glyph prototypes.
    split: "train", "validation" or "test".
    n: number of examples (>= 1).
    seed: data set seed (>= 0).
    difficulty: a THETA_RANGES name.
    start: first example index (>= 0).
    chunk: examples rendered per jitted call (bounds peak memory).

  Returns:
    dict as `fonts_examples`, as numpy arrays with leading dimension n.
  """
  n = checks.check_positive_int("n", n)
  start = checks.check_positive_int("start", start, minimum=0)
  chunk = checks.check_positive_int("chunk", chunk)
  checks.check_choice("difficulty", difficulty, THETA_RANGES)
  key = split_key(seed, split)
  images = _prototype_images(prototypes)
  size = min(chunk, n)
  parts = []
  for lo in range(start, start + n, size):
    # Fixed-size chunks compile once; the tail is padded and cut.
    idx = np.arange(lo, lo + size, dtype=np.int32)
    out = _fonts_examples_jit(key, images, idx, difficulty=difficulty)
    keep = min(size, start + n - lo)
    parts.append({k: np.asarray(v)[:keep] for k, v in out.items()})
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def save_sample_grid(prototypes: Prototypes, path: str, num_fonts: int = 8,
                     difficulty: str = "hard", key: jax.Array | None = None) -> str:
  """Writes a PNG grid of random samples: one row per class, one column per font.

  Args:
    prototypes: the glyph prototypes (columns use its first num_fonts fonts).
    path: output .png file; parent folders are created.
    num_fonts: columns (clipped to the number of fonts).
    difficulty: a THETA_RANGES name ("none" shows the prototypes).
    key: PRNG key for theta; None means PRNGKey(0).

  Returns:
    path.
  """
  num_fonts = min(checks.check_positive_int("num_fonts", num_fonts), prototypes.num_fonts)
  checks.check_choice("difficulty", difficulty, THETA_RANGES)
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=import-outside-toplevel
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  num_classes = prototypes.num_classes
  key = jax.random.PRNGKey(0) if key is None else key
  fonts = np.tile(np.arange(num_fonts, dtype=np.int32), num_classes)
  chars = np.repeat(np.arange(num_classes, dtype=np.int32), num_fonts)
  thetas = sample_theta(key, fonts.size, difficulty)
  imgs = np.asarray(warp.render_batch(prototypes.images, fonts, chars, thetas))
  fig = Figure(figsize=(1.0 * num_fonts + 0.6, 1.0 * num_classes + 0.9), dpi=100)
  FigureCanvasAgg(fig)
  axes = fig.subplots(num_classes, num_fonts, squeeze=False)
  for r in range(num_classes):
    for c in range(num_fonts):
      ax = axes[r, c]
      ax.imshow(imgs[r * num_fonts + c], cmap="gray_r", vmin=0.0, vmax=1.0)
      ax.set_xticks([])
      ax.set_yticks([])
      if c == 0:
        ax.set_ylabel(prototypes.characters[r], rotation=0, labelpad=10, fontsize=11)
      if r == 0:
        ax.set_title(prototypes.font_names[c][:14], fontsize=6)
  fig.suptitle(f"FONTS samples ({difficulty}): rows = classes, columns = fonts", fontsize=9)
  parent = os.path.dirname(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  fig.savefig(path, format="png")
  return path
