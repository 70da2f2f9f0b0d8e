"""The object-removal in-painter and a PatchGAN discriminator (Shetty et al., NeurIPS 2018).

In-painter: input x * (1 - m) concatenated with m; a strided encoder (/4), residual blocks
with dilations (1, 1, 1, 2, 4, 8), a nearest-upsampling decoder with U-Net skips, and a
sigmoid output G (or a residual over a diffusion fill); the result is composited as
G * m + x * (1 - m) (`composite`). Every convolution is a
patch matmul (`PatchConv`, or `DilatedConv` below), which XLA:CPU runs fast inside scans.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from rsec.models.layers import PatchConv


def dilated_patches(x: jax.Array, dilation: int) -> jax.Array:
  """[B, H, W, C] -> [B, H, W, 9C]: 3x3 'SAME' patches with the given dilation."""
  d = dilation
  p = jnp.pad(x, ((0, 0), (d, d), (d, d), (0, 0)))
  h, w = x.shape[1:3]
  return jnp.concatenate([p[:, i * d:i * d + h, j * d:j * d + w] for i in range(3)
                          for j in range(3)], axis=-1)


class DilatedConv(nn.Module):
  """3x3 convolution with dilation, stride 1, 'SAME' padding; `nn.Conv`'s param layout."""
  features: int
  dilation: int = 1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (3, 3, x.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
    return dilated_patches(x, self.dilation) @ kernel.reshape(-1, self.features) + bias


def diffusion_fill(x: jax.Array, m: jax.Array, iters: int) -> jax.Array:
  """Fills holes m [B, H, W, 1] of x [B, H, W, C]: mean colour, then `iters` 3x3 box blurs
  with the known pixels reset after each (a harmonic, i.e. smooth, interpolation)."""
  known = 1 - m
  mean = (x * known).sum((1, 2), keepdims=True) / jnp.maximum(known.sum((1, 2), keepdims=True), 1)
  start = x * known + mean * m

  def body(_, y):
    p = jnp.pad(y, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = y.shape[1:3]
    blur = sum(p[:, i:i + h, j:j + w] for i in range(3) for j in range(3)) / 9
    return x * known + blur * m
  return jax.lax.fori_loop(0, iters, body, start)


def upsample2(x: jax.Array) -> jax.Array:
  """Nearest-neighbour x2 upsampling of [B, H, W, C]."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def leaky(x: jax.Array) -> jax.Array:
  """leaky_relu(0.2): the in-painter's and mask generator's activation. With plain ReLUs
  an early large Adam step can kill every decoder unit at once (gradients fall to ~1e-8
  and the residual head stays at zero: the in-painter degenerates to the diffusion fill)."""
  return nn.leaky_relu(x, 0.2)


class Inpainter(nn.Module):
  """G(x * (1 - m), m) -> [B, H, W, 3] in [0, 1] (H, W divisible by 4).

  The decoder takes skip connections from the encoder's full- and half-resolution
  features: thin texture (grid lines, lane dashes) must be continued from the pixels
  right around the hole, which an /4 bottleneck alone blurs away.
  With `coarse_iters` > 0 the network also sees a smooth diffusion fill of the hole and
  predicts a residual on top of it (coarse-to-fine): it starts where the best naive fill
  is and spends its capacity on texture and structure.
  """
  channels: Sequence[int] = (16, 32, 64)
  dilations: Sequence[int] = (1, 1, 1, 2, 4, 8)
  coarse_iters: int = 0

  @nn.compact
  def __call__(self, x: jax.Array, m: jax.Array) -> jax.Array:
    c0, c1, c2 = self.channels
    h = jnp.concatenate([x * (1 - m), m], axis=-1)
    if self.coarse_iters:
      coarse = jax.lax.stop_gradient(diffusion_fill(x * (1 - m), m, self.coarse_iters))
      h = jnp.concatenate([h, coarse], axis=-1)
    h0 = leaky(PatchConv(c0, (3, 3))(h))
    h1 = leaky(PatchConv(c1, (4, 4), (2, 2), padding=((1, 1), (1, 1)))(h0))
    h = leaky(PatchConv(c2, (4, 4), (2, 2), padding=((1, 1), (1, 1)))(h1))
    for d in self.dilations:
      y = leaky(DilatedConv(c2, d)(h))
      y = DilatedConv(c2, 1)(y)
      h = leaky(h + y)
    h = leaky(PatchConv(c1, (3, 3))(jnp.concatenate([upsample2(h), h1], axis=-1)))
    h = leaky(PatchConv(c0, (3, 3))(jnp.concatenate([upsample2(h), h0], axis=-1)))
    if self.coarse_iters:
      # A small (not zero) initial residual: the output starts at the diffusion fill and
      # every layer gets a gradient from the first step.
      init = nn.initializers.variance_scaling(0.01, "fan_in", "normal")
      out = PatchConv(3, (3, 3), kernel_init=init)(h)
      return jnp.clip(coarse + out, 0.0, 1.0)
    return nn.sigmoid(PatchConv(3, (3, 3))(h))


def composite(x: jax.Array, m: jax.Array, g: jax.Array) -> jax.Array:
  """G * m + x * (1 - m); x, g [B, H, W, 3], m [B, H, W, 1] in [0, 1]."""
  return g * m + x * (1 - m)


class PatchDiscriminator(nn.Module):
  """PatchGAN: [B, H, W, C] -> real/fake logits [B, H/8, W/8] (one per receptive patch)."""
  channels: Sequence[int] = (16, 32, 64)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for c in self.channels:
      x = nn.leaky_relu(PatchConv(c, (4, 4), (2, 2), padding=((1, 1), (1, 1)))(x), 0.2)
    return PatchConv(1, (3, 3))(x)[..., 0]
