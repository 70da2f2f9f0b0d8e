"""Mask generator: straight-through binarisation and one training step."""
import jax
import jax.numpy as jnp
import numpy as np

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
