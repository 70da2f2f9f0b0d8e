"""Mask generator: straight-through binarisation and one training step."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsec.context import maskgen
from rsec.data import scene_rules as R
from rsec.models.inpainter import Inpainter
from rsec.models.mask_generator import straight_through


def test_straight_through():
  s = jnp.array([0.2, 0.7])
  np.testing.assert_array_equal(straight_through(s), [0.0, 1.0])
  g = jax.grad(lambda s: (straight_through(s) * jnp.array([1.0, 2.0])).sum())(s)
  np.testing.assert_allclose(g, [1.0, 2.0])


def test_targets_are_present():
  y = jnp.array([[0, 1, 0, 1], [1, 0, 0, 0]], jnp.float32)
  for i in range(5):
    t = np.asarray(maskgen.sample_targets(jax.random.key(i), y))
    assert y[0, t[0]] == 1 and t[1] == 0


def test_step_runs(small_scenes):
  x = jnp.asarray(small_scenes["image"][:4])
  y = jnp.asarray(small_scenes["labels"][:4])
  net = Inpainter(channels=(8, 8, 8))
  ip = net.init(jax.random.key(0), x, x[..., :1])["params"]
  w = jax.random.normal(jax.random.key(1), (32 * 32 * 3, R.NUM_THINGS)) * 0.01
  logits_fn = lambda z: z.reshape(z.shape[0], -1) @ w
  state = maskgen.create_maskgen_state(jax.random.key(2), 32, R.NUM_THINGS, (8, 8, 8),
                                       (8, 8, 8))
  step = jax.jit(maskgen.make_maskgen_step(lambda a, m: net.apply({"params": ip}, a, m),
                                           logits_fn))
  new, metrics = step(state, {"image": x, "targets": y}, jax.random.key(3))
  assert int(new.step) == 1 and float(metrics["finite"]) == 1
  assert not np.allclose(new.g_params["PatchConv_0"]["kernel"],
                         state.g_params["PatchConv_0"]["kernel"])
  masks = maskgen.generate_masks(new, x, jnp.zeros(4, jnp.int32))
  assert masks.shape == (4, 32, 32)


def test_unpaired_masks_are_real_class_masks_of_other_images(small_scenes):
  m, cls, shown = small_scenes["masks"], small_scenes["layout"]["cls"], small_scenes["shown"]
  out = maskgen.unpaired_masks(m, cls, shown, seed=0)
  n = len(m)
  assert out["prior_mask"].shape == (n,) + m.shape[2:] and out["prior_class"].shape == (n,)
  class_masks = lambda j, k: (m[j] & ((cls[j] == k) & shown[j])[:, None, None]).any(0)  # noqa: E731
  for i in range(n):
    k = out["prior_class"][i]
    sources = [j for j in range(n) if ((cls[j] == k) & shown[j]).any()
               and np.array_equal(class_masks(j, k), out["prior_mask"][i] > 0)]
    assert sources and sources != [i], i        # a real mask of class k, not only image i's
  again = maskgen.unpaired_masks(m, cls, shown, seed=0)
  np.testing.assert_array_equal(again["prior_mask"], out["prior_mask"])
  with pytest.raises(ValueError, match="instance_masks"):
    maskgen.unpaired_masks(m[:1], cls[:1], shown[:1], seed=0)


def test_shape_prior_step_needs_prior_masks_and_trains_the_mask_critic(small_scenes):
  x = jnp.asarray(small_scenes["image"][:4])
  y = jnp.asarray(small_scenes["labels"][:4])
  prior = maskgen.unpaired_masks(small_scenes["masks"], small_scenes["layout"]["cls"],
                                 small_scenes["shown"], seed=0)
  state = maskgen.create_maskgen_state(jax.random.key(2), 32, R.NUM_THINGS, (8, 8, 8),
                                       (8, 8, 8))
  fill = lambda a, m: jnp.full_like(a, 0.5)
  logits_fn = lambda z: jnp.zeros((z.shape[0], R.NUM_THINGS)) + z.mean()
  step = maskgen.make_maskgen_step(fill, logits_fn, prior_weight=1.0)
  with pytest.raises(ValueError, match="prior_mask"):
    step(state, {"image": x, "targets": y}, jax.random.key(3))
  batch = {"image": x, "targets": y, **{k: v[:4] for k, v in prior.items()}}
  new, metrics = jax.jit(step)(state, batch, jax.random.key(3))
  assert float(metrics["finite"]) == 1 and np.isfinite(float(metrics["prior"]))
  critic = lambda s: s.d_params["mask"]["Dense_0"]["kernel"]  # noqa: E731
  assert not np.allclose(critic(new), critic(state))


def _squares(key, n, size=16, side=4):
  """Grey noise with a red square (class 0) and a blue one (class 1) per image."""
  kx, kp = jax.random.split(key)
  x = 0.4 + 0.1 * jax.random.uniform(kx, (n, size, size, 3))
  pos = np.array(jax.random.randint(kp, (n, 2, 2), 0, size - side))
  pos[:, 1, 1] = (pos[:, 0, 1] + side + 1 + pos[:, 1, 1] % 3) % (size - side)
  truth = np.zeros((n, 2, size, size), np.float32)
  x = np.array(x)
  for i in range(n):
    for c, colour in enumerate(([0.9, 0.1, 0.1], [0.1, 0.1, 0.9])):
      (r, col) = pos[i, c]
      x[i, r:r + side, col:col + side] = colour
      truth[i, c, r:r + side, col:col + side] = 1
  truth[:, 0] *= 1 - truth[:, 1]                 # overlaps belong to the blue square
  return jnp.asarray(x), truth


def _detector(z):
  """Class 0 fires on red pixels, class 1 on blue ones; 6 absent classes."""
  red = jax.nn.relu(z[..., 0] - jnp.maximum(z[..., 1], z[..., 2]) - 0.3).sum((1, 2))
  blue = jax.nn.relu(z[..., 2] - jnp.maximum(z[..., 0], z[..., 1]) - 0.3).sum((1, 2))
  present = jnp.stack([red, blue], -1) - 3.0     # a 4x4 square gives ~ +6
  return jnp.concatenate([present, jnp.full((z.shape[0], 6), -10.0)], -1)


def test_weak_supervision_finds_the_target():
  """From image-level labels and a detector alone, the masks learn where each class is."""
  x, truth = _squares(jax.random.key(0), 64)
  y = jnp.zeros((64, 8)).at[:, :2].set(1)
  state = maskgen.create_maskgen_state(jax.random.key(1), 16, 8, (8, 16, 16), (8, 8, 8),
                                       lr=3e-3)
  fill = lambda a, m: jnp.full_like(a, 0.45)     # stands in for the in-painter
  step = jax.jit(maskgen.make_maskgen_step(fill, _detector, area_weight=4.0))
  for i in range(150):
    rows = np.arange(i * 16, i * 16 + 16) % 64
    state, metrics = step(state, {"image": x[rows], "targets": y[rows]}, jax.random.key(i))
  assert float(metrics["finite"]) == 1
  for c in (0, 1):
    m = np.asarray(maskgen.generate_masks(state, x, jnp.full((64,), c, jnp.int32)))
    iou = (m * truth[:, c]).sum() / np.maximum(m, truth[:, c]).sum()
    assert iou > 0.5, (c, iou)


def test_random_shift_is_an_edge_padded_crop_per_image():
  x = jax.random.uniform(jax.random.key(0), (16, 8, 8, 3))
  assert maskgen.random_shift(jax.random.key(1), x, 0) is x
  out = np.asarray(maskgen.random_shift(jax.random.key(1), x, 2))
  padded = np.pad(np.asarray(x), ((0, 0), (2, 2), (2, 2), (0, 0)), mode="edge")
  found = set()
  for i in range(16):
    hits = [(dy, dx) for dy in range(5) for dx in range(5)
            if np.array_equal(out[i], padded[i, dy:dy + 8, dx:dx + 8])]
    assert len(hits) == 1, i
    found.add(hits[0])
  assert len(found) > 4          # the offsets differ from image to image


def _train_squares(prior_weight, steps=150):
  x, truth = _squares(jax.random.key(0), 64)
  _, other = _squares(jax.random.key(5), 64)       # unpaired real masks: other images
  y = jnp.zeros((64, 8)).at[:, :2].set(1)
  prior = {"prior_mask": jnp.asarray(np.concatenate([other[:32, 0], other[32:, 1]])),
           "prior_class": jnp.asarray(np.repeat([0, 1], 32).astype(np.int32))}
  state = maskgen.create_maskgen_state(jax.random.key(1), 16, 8, (8, 16, 16), (8, 8, 8),
                                       lr=3e-3)
  fill = lambda a, m: jnp.full_like(a, 0.45)
  step = jax.jit(maskgen.make_maskgen_step(fill, _detector, area_weight=0.0,
                                           prior_weight=prior_weight))
  perm = np.random.default_rng(0).permutation(64)
  for i in range(steps):
    rows = np.arange(i * 16, i * 16 + 16) % 64
    batch = {"image": x[rows], "targets": y[rows],
             **{k: v[perm[rows]] for k, v in prior.items()}}
    state, _ = step(state, batch, jax.random.key(i))
  ious = []
  for c in (0, 1):
    m = np.asarray(maskgen.generate_masks(state, x, jnp.full((64,), c, jnp.int32)))
    ious.append((m * truth[:, c]).sum() / np.maximum(m, truth[:, c]).sum())
  return min(ious)


def test_shape_prior_tightens_masks_without_an_area_prior():
  """With no area term nothing stops the masks from spreading over the background; the
  unpaired shape prior alone (real squares of each class from other images) pulls them
  back to the objects' size."""
  without, with_prior = _train_squares(0.0), _train_squares(1.0)
  assert with_prior > 0.5 and with_prior > without + 0.1, (without, with_prior)
