"""A small UperNet-like semantic segmenter: strided encoder, pyramid pooling head on the
coarsest features, top-down FPN fusion, per-pixel logits at full resolution.

Input [B, H, W, C] with H and W divisible by 8 (and H/8 by every pooling bin); output
logits [B, H, W, num_classes]. Convolutions are `PatchConv` (fast on XLA:CPU).
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from rsec.models.classifiers import BN_DEFAULTS
from rsec.models.layers import BatchNorm, PatchConv


class _ConvBN(nn.Module):
  features: int
  kernel: int = 3
  stride: int = 1

  @nn.compact
  def __call__(self, x, train: bool):
    pad = (self.kernel - self.stride + 1) // 2
    x = PatchConv(self.features, (self.kernel, self.kernel), strides=(self.stride,) * 2,
                  padding=((pad, self.kernel - self.stride - pad),) * 2, use_bias=False)(x)
    return nn.relu(BatchNorm(use_running_average=not train, **BN_DEFAULTS)(x))


def _resize(x: jax.Array, h: int, w: int) -> jax.Array:
  return jax.image.resize(x, (x.shape[0], h, w, x.shape[-1]), "bilinear")


class PyramidSegmenter(nn.Module):
  num_classes: int = 14
  channels: Sequence[int] = (16, 32, 64, 64)   # full, 1/2, 1/4, 1/8 resolution
  bins: Sequence[int] = (1, 2, 4)              # pyramid pooling grid sizes
  width: int = 32                              # fused feature width

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    b, h, w, _ = x.shape
    if h % 8 or w % 8:
      raise ValueError(f"PyramidSegmenter needs H and W divisible by 8, got {h}x{w}")
    feats = [_ConvBN(self.channels[0])(x, train)]
    for c in self.channels[1:]:
      feats.append(_ConvBN(c, kernel=4, stride=2)(feats[-1], train))
    top = feats[-1]
    th, tw = top.shape[1:3]
    pooled = [top]
    for n in self.bins:
      if th % n or tw % n:
        raise ValueError(f"pyramid bin {n} must divide the coarsest feature map {th}x{tw}")
      p = top.reshape(b, n, th // n, n, tw // n, top.shape[-1]).mean((2, 4))
      pooled.append(_resize(_ConvBN(self.width // 2, kernel=1)(p, train), th, tw))
    f = _ConvBN(self.width)(jnp.concatenate(pooled, -1), train)
    for lateral in reversed(feats[:-1]):   # top-down fusion, as in FPN / UperNet
      fh, fw = lateral.shape[1:3]
      f = _resize(f, fh, fw) + _ConvBN(self.width, kernel=1)(lateral, train)
      f = _ConvBN(self.width)(f, train)
    return PatchConv(self.num_classes, (1, 1), padding="VALID")(f)
