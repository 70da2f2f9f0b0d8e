"""Layers tuned for XLA:CPU.

`PatchConv` computes a convolution as patch extraction (strided slices) followed by one
matmul. On XLA:CPU, native convolutions inside `lax.scan`/`fori_loop` bodies (where all of
rsec's training steps and attacks run) were measured 5-10x slower than this form, and
its gradients are pads and matmuls, which stay fast. Parameters have `nn.Conv`'s names and
layout (`kernel` [kh, kw, in, out], `bias` [out]), so weights move freely between the two.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def _pads(padding, kernel: Sequence[int], strides: Sequence[int], spatial: Sequence[int]):
  if isinstance(padding, str):
    if padding == "VALID":
      return [(0, 0)] * len(kernel)
    if padding == "SAME":
      out = []
      for n, k, s in zip(spatial, kernel, strides):
        total = max((-(-n // s) - 1) * s + k - n, 0)
        out.append((total // 2, total - total // 2))
      return out
    raise ValueError(f"padding must be 'SAME', 'VALID', an int or pairs, got {padding!r}")
  if isinstance(padding, int):
    return [(padding, padding)] * len(kernel)
  return [tuple(p) for p in padding]


def extract_patches(x: jax.Array, kernel: Sequence[int], strides: Sequence[int],
                    padding) -> jax.Array:
  """[B, H, W, C] -> [B, Ho, Wo, kh*kw*C] patches, ordered (kh, kw, C) like a HWIO kernel."""
  (kh, kw), (sh, sw) = kernel, strides
  (pt, pb), (pl, pr) = _pads(padding, kernel, strides, x.shape[1:3])
  x = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  ho, wo = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
  cols = [x[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw, :]
          for i in range(kh) for j in range(kw)]
  return jnp.concatenate(cols, axis=-1)


class PatchConv(nn.Module):
  """2-D convolution over NHWC inputs as patches @ kernel; same params as `nn.Conv`."""
  features: int
  kernel_size: Sequence[int] = (3, 3)
  strides: Sequence[int] = (1, 1)
  padding: str | int | Sequence[tuple[int, int]] = "SAME"
  use_bias: bool = True
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
  bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kh, kw = self.kernel_size
    kernel = self.param("kernel", self.kernel_init, (kh, kw, x.shape[-1], self.features))
    strides = tuple(self.strides) if not isinstance(self.strides, int) else (self.strides,) * 2
    p = extract_patches(x, (kh, kw), strides, self.padding)
    y = p @ kernel.reshape(-1, self.features)
    if self.use_bias:
      y = y + self.param("bias", self.bias_init, (self.features,))
    return y
