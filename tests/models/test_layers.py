"""PatchConv equals XLA's native convolution (values and gradients), on both patch paths."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsec.models.layers import (PatchConv, extract_patches, space_to_depth_kernel,
                                space_to_depth_patches)


def _native(x, kernel, strides, padding):
  if isinstance(padding, int):
    padding = [(padding, padding)] * 2
  return jax.lax.conv_general_dilated(x, kernel, strides, padding,
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


CASES = [  # (H, W, C, O, kernel, strides, padding)
    (28, 28, 1, 4, (4, 4), (2, 2), ((1, 1), (1, 1))),   # paper CNN, space-to-depth
    (7, 7, 3, 5, (4, 4), (2, 2), ((1, 1), (1, 1))),     # odd size: a cropped block
    (9, 6, 2, 3, (2, 4), (2, 2), "VALID"),              # unequal kernel sides
    (10, 10, 2, 3, (6, 6), (3, 3), "SAME"),
    (8, 8, 2, 3, (3, 3), (2, 2), "SAME"),               # kernel not a multiple: plain
    (8, 8, 2, 3, (3, 3), (1, 1), "SAME"),
    (8, 8, 2, 3, (1, 1), (2, 2), "VALID"),
]


@pytest.mark.parametrize("h,w,c,o,kernel,strides,padding", CASES)
def test_patch_conv_equals_native_conv_and_its_gradients(h, w, c, o, kernel, strides, padding):
  x = jax.random.uniform(jax.random.key(0), (2, h, w, c))
  layer = PatchConv(o, kernel, strides, padding, use_bias=False)
  v = layer.init(jax.random.key(1), x)
  k = v["params"]["kernel"]
  np.testing.assert_allclose(layer.apply(v, x), _native(x, k, strides, padding),
                             rtol=1e-5, atol=1e-5)
  loss = lambda f: lambda x, k: jnp.sum(jnp.sin(f(x, k)))
  ours = jax.grad(loss(lambda x, k: layer.apply({"params": {"kernel": k}}, x)), (0, 1))(x, k)
  ref = jax.grad(loss(lambda x, k: _native(x, k, strides, padding)), (0, 1))(x, k)
  for a, b in zip(ours, ref):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_space_to_depth_patches_are_the_plain_patches_reordered():
  x = jax.random.uniform(jax.random.key(0), (3, 13, 11, 2))
  kernel = jax.random.normal(jax.random.key(1), (4, 6, 2, 5))
  pad = ((1, 2), (0, 1))
  plain = extract_patches(x, (4, 6), (2, 2), pad) @ kernel.reshape(-1, 5)
  s2d = space_to_depth_patches(x, (4, 6), 2, pad) @ space_to_depth_kernel(kernel, 2)
  np.testing.assert_allclose(s2d, plain, rtol=1e-5, atol=1e-5)
  assert sorted(np.asarray(space_to_depth_patches(x, (4, 6), 2, pad)).ravel().tolist()) == \
      sorted(np.asarray(extract_patches(x, (4, 6), (2, 2), pad)).ravel().tolist())


def test_space_to_depth_patches_refuse_a_kernel_that_is_not_a_multiple_of_the_stride():
  with pytest.raises(ValueError, match="multiple of stride"):
    space_to_depth_patches(jnp.zeros((1, 8, 8, 1)), (3, 3), 2, "SAME")
