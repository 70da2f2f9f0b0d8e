"""Transposed convolution for XLA:CPU: zero-dilate the input, pad, then `PatchConv`'s matmul.

A transposed convolution with stride s, kernel k and (PyTorch) padding p is a stride-1
correlation of the input dilated by s (s - 1 zeros between pixels) and padded by k - 1 - p
on each side, so it reuses `extract_patches` + one matmul and stays fast inside
`lax.scan` (see layers.py). Output size: (n - 1) s - 2p + k. With this layout the layer
equals `lax.conv_transpose(x, kernel, strides, [(k-1-p, k-1-p)]*2, transpose_kernel=False)`
on NHWC/HWIO, which the tests check numerically.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from rsec.models.layers import extract_patches


def dilate(x: jax.Array, strides: Sequence[int]) -> jax.Array:
  """[B, H, W, C] -> [B, (H-1) sh + 1, (W-1) sw + 1, C], zeros between the pixels."""
  sh, sw = strides
  b, h, w, c = x.shape
  out = jnp.zeros((b, (h - 1) * sh + 1, (w - 1) * sw + 1, c), x.dtype)
  return out.at[:, ::sh, ::sw, :].set(x)


class PatchConvTranspose(nn.Module):
  """Transposed 2-D convolution on NHWC (PyTorch `ConvTranspose2d` sizes); kernel HWIO."""
  features: int
  kernel_size: Sequence[int] = (4, 4)
  strides: Sequence[int] = (2, 2)
  padding: int = 1
  use_bias: bool = True
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kh, kw = self.kernel_size
    kernel = self.param("kernel", self.kernel_init, (kh, kw, x.shape[-1], self.features))
    pads = ((kh - 1 - self.padding,) * 2, (kw - 1 - self.padding,) * 2)
    if min(min(p) for p in pads) < 0:
      raise ValueError(f"padding={self.padding} must be < kernel_size {self.kernel_size}")
    p = extract_patches(dilate(x, tuple(self.strides)), (kh, kw), (1, 1), pads)
    y = p @ kernel.reshape(-1, self.features)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros_init(), (self.features,))
    return y


def transposed_output_size(n: int, kernel: int, stride: int, padding: int) -> int:
  """Spatial output size of `PatchConvTranspose`: (n - 1) stride - 2 padding + kernel."""
  return (n - 1) * stride - 2 * padding + kernel
