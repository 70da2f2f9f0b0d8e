"""Transposed convolution for XLA:CPU as sub-pixel (phase) matmuls, like `PatchConv`.

A transposed convolution with stride s, kernel k and (PyTorch) padding p is a stride-1
correlation of the input dilated by s and padded by P = k - 1 - p. Computing it that way
multiplies mostly zeros (s^2 = 4x the work for stride 2), so each of the s x s output
phases r is computed on its own: output row q s + r reads input rows q + (r + t - P) / s
for the taps t with r + t - P divisible by s. Each phase is then patches (strided slices)
@ kernel taps, one matmul, and the phases are interleaved (depth-to-space). Output size:
(n - 1) s - 2p + k. The layer equals `lax.conv_transpose(x, kernel, strides,
[(P, P)] * 2, transpose_kernel=False)` on NHWC/HWIO, which the tests check numerically.
"""
from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def transposed_output_size(n: int, kernel: int, stride: int, padding: int) -> int:
  """Spatial output size: (n - 1) stride - 2 padding + kernel."""
  return (n - 1) * stride - 2 * padding + kernel


def _phase_taps(r: int, k: int, s: int, big_p: int) -> tuple[list[int], list[int]]:
  """Kernel taps and input offsets that feed output phase r along one axis."""
  taps = [t for t in range(k) if (r + t - big_p) % s == 0]
  return taps, [(r + t - big_p) // s for t in taps]


def conv_transpose_phases(x: jax.Array, kernel: jax.Array, strides: Sequence[int],
                          padding: int) -> jax.Array:
  """x [B, H, W, Cin], kernel [kh, kw, Cin, Cout] -> [B, Ho, Wo, Cout] (see module doc)."""
  b, h, w, cin = x.shape
  kh, kw, _, cout = kernel.shape
  (sh, sw), (ph, pw) = strides, (kh - 1 - padding, kw - 1 - padding)
  out_h, out_w = transposed_output_size(h, kh, sh, padding), transposed_output_size(
      w, kw, sw, padding)
  qh, qw = math.ceil(out_h / sh), math.ceil(out_w / sw)
  phases_h = [_phase_taps(r, kh, sh, ph) for r in range(sh)]
  phases_w = [_phase_taps(r, kw, sw, pw) for r in range(sw)]
  offs_h = [o for _, offs in phases_h for o in offs] or [0]
  offs_w = [o for _, offs in phases_w for o in offs] or [0]
  lo_h, lo_w = max(0, -min(offs_h)), max(0, -min(offs_w))
  hi_h, hi_w = max(0, qh - 1 + max(offs_h) - (h - 1)), max(0, qw - 1 + max(offs_w) - (w - 1))
  xp = jnp.pad(x, ((0, 0), (lo_h, hi_h), (lo_w, hi_w), (0, 0)))
  rows = []
  for taps_h, oh in phases_h:
    cols = []
    for taps_w, ow in phases_w:
      if not taps_h or not taps_w:
        cols.append(jnp.zeros((b, qh, qw, cout), x.dtype))
        continue
      parts = [xp[:, lo_h + i:lo_h + i + qh, lo_w + j:lo_w + j + qw, :] for i in oh for j in ow]
      k = kernel[np.asarray(taps_h)][:, np.asarray(taps_w)].reshape(-1, cout)
      cols.append(jnp.concatenate(parts, axis=-1) @ k)
    rows.append(jnp.stack(cols, axis=3))          # [B, qh, qw, sw, Cout]
  y = jnp.stack(rows, axis=2)                     # [B, qh, sh, qw, sw, Cout]
  return y.reshape(b, qh * sh, qw * sw, cout)[:, :out_h, :out_w]


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
    if not 0 <= self.padding < min(kh, kw):
      raise ValueError(f"padding={self.padding} must be in [0, kernel_size {kh, kw})")
    kernel = self.param("kernel", self.kernel_init, (kh, kw, x.shape[-1], self.features))
    y = conv_transpose_phases(x, kernel, tuple(self.strides), self.padding)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros_init(), (self.features,))
    return y
