"""The weakly supervised mask generator (Shetty et al., NeurIPS 2018).

Given an image and a target class, predicts where the class's objects are, as mask logits;
trained only through a classifier's image-level scores (`rsec.context.maskgen`).
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from rsec.models.inpainter import DilatedConv, leaky, upsample2
from rsec.models.layers import PatchConv


class MaskGenerator(nn.Module):
  """(x [B, H, W, 3], target int [B]) -> mask logits [B, H, W] (H, W divisible by 4).

  A small U-Net: the one-hot target is tiled onto the input and onto the bottleneck,
  two stride-2 stages, dilated context blocks, and a decoder with skip connections.
  """
  num_classes: int
  channels: Sequence[int] = (16, 32, 64)
  dilations: Sequence[int] = (1, 2, 4)

  @nn.compact
  def __call__(self, x: jax.Array, target: jax.Array) -> jax.Array:
    c0, c1, c2 = self.channels
    onehot = jax.nn.one_hot(target, self.num_classes)[:, None, None, :]
    tile = lambda h: jnp.broadcast_to(onehot, h.shape[:3] + (self.num_classes,))
    h0 = leaky(PatchConv(c0, (3, 3))(jnp.concatenate([x, tile(x)], -1)))
    h1 = leaky(PatchConv(c1, (4, 4), (2, 2), padding=((1, 1), (1, 1)))(h0))
    h2 = leaky(PatchConv(c2, (4, 4), (2, 2), padding=((1, 1), (1, 1)))(h1))
    h = jnp.concatenate([h2, tile(h2)], -1)
    for d in self.dilations:
      h = leaky(DilatedConv(c2, d)(h))
    h = leaky(PatchConv(c1, (3, 3))(jnp.concatenate([upsample2(h), h1], -1)))
    h = leaky(PatchConv(c0, (3, 3))(jnp.concatenate([upsample2(h), h0], -1)))
    return PatchConv(1, (3, 3))(h)[..., 0]


def straight_through(soft: jax.Array, threshold: float = 0.5) -> jax.Array:
  """Binarises in the forward pass, passes the soft mask's gradient in the backward pass."""
  hard = (soft > threshold).astype(soft.dtype)
  return soft + jax.lax.stop_gradient(hard - soft)
