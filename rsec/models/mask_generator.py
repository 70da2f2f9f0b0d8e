"""The weakly supervised mask generator (Shetty et al., NeurIPS 2018).

Given an image and a target class, predicts where the class's objects are, as mask logits;
trained only through a classifier's image-level scores (`rsec.context.maskgen`).
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from rsec.models.inpainter import DilatedConv, PatchDiscriminator, leaky, upsample2
from rsec.models.layers import PatchConv


class MaskGenerator(nn.Module):
  """(x [B, H, W, 3], target int [B]) -> mask logits [B, H, W] (H, W divisible by 4).

  A small U-Net (two stride-2 stages, dilated context blocks, a decoder with skip
  connections) with one output channel per class; the target selects its channel. Each
  class gets its own detector head instead of having to decode a one-hot class input
  (tiling the one-hot onto the input and bottleneck learned no better, and costs more).
  """
  num_classes: int
  channels: Sequence[int] = (16, 32, 64)
  dilations: Sequence[int] = (1, 2, 4)

  @nn.compact
  def __call__(self, x: jax.Array, target: jax.Array) -> jax.Array:
    c0, c1, c2 = self.channels
    h0 = leaky(PatchConv(c0, (3, 3))(x))
    h1 = leaky(PatchConv(c1, (4, 4), (2, 2), padding=((1, 1), (1, 1)))(h0))
    h = leaky(PatchConv(c2, (4, 4), (2, 2), padding=((1, 1), (1, 1)))(h1))
    for d in self.dilations:
      h = leaky(DilatedConv(c2, d)(h))
    h = leaky(PatchConv(c1, (3, 3))(jnp.concatenate([upsample2(h), h1], -1)))
    h = leaky(PatchConv(c0, (3, 3))(jnp.concatenate([upsample2(h), h0], -1)))
    per_class = PatchConv(self.num_classes, (3, 3))(h)
    return jnp.take_along_axis(per_class, target[:, None, None, None], -1)[..., 0]


def straight_through(soft: jax.Array, threshold: float = 0.5) -> jax.Array:
  """Binarises in the forward pass, passes the soft mask's gradient in the backward pass."""
  hard = (soft > threshold).astype(soft.dtype)
  return soft + jax.lax.stop_gradient(hard - soft)


class MaskCritic(nn.Module):
  """(mask [B, H, W] in [0, 1], class int [B]) -> logit [B]: a real mask of that class?

  The unpaired mask prior of Shetty et al.: trained on ground-truth masks from *other*
  images, it knows each class's shapes, sizes and places, not which pixels of this image
  are the object. Strided convolutions over the mask and the class one-hot tiled onto it,
  then one dense layer over the whole map (size and position are global properties).
  """
  num_classes: int
  channels: Sequence[int] = (16, 32, 64)

  @nn.compact
  def __call__(self, m: jax.Array, cls: jax.Array) -> jax.Array:
    b, h, w = m.shape
    onehot = jnp.broadcast_to(jax.nn.one_hot(cls, self.num_classes, dtype=m.dtype)[:, None, None],
                              (b, h, w, self.num_classes))
    z = jnp.concatenate([m[..., None], onehot], -1)
    for c in self.channels:
      z = leaky(PatchConv(c, (4, 4), (2, 2), padding=((1, 1), (1, 1)))(z))
    return nn.Dense(1)(z.reshape(b, -1))[:, 0]


class RemovalCritics(nn.Module):
  """The mask generator's two critics: a PatchGAN on edited images (realism) and a
  `MaskCritic` on masks (shape prior). (x [B, H, W, 3], m [B, H, W], cls [B]) ->
  (patch logits [B, H/8, W/8], mask logits [B])."""
  num_classes: int
  channels: Sequence[int] = (16, 32, 64)

  def setup(self):
    self.image = PatchDiscriminator(tuple(self.channels))
    self.mask = MaskCritic(self.num_classes, tuple(self.channels))

  def __call__(self, x: jax.Array, m: jax.Array, cls: jax.Array):
    return self.image(x), self.mask(m, cls)
