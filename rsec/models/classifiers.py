"""Image classifiers (flax linen), chosen by name through `MODELS`.

All take images [B, H, W, C] float32 in [0, 1] and return logits [B, num_classes].
BatchNorm uses batch statistics when `train=True` and running averages otherwise;
under `jax.jit` over a data mesh the batch statistics are global (all devices).
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from rsec.models.layers import BatchNorm, Dense, PatchConv
from rsec.registry import Registry

MODELS: Registry[type[nn.Module]] = Registry("model")

# Momentum of the running averages; Torch's 0.1 update rate, as in the paper's code.
BN_DEFAULTS = dict(momentum=0.9, epsilon=1e-5)


@MODELS.register("paper_classifier")
class PaperClassifier(nn.Module):
  """Stutz et al. (CVPR 2019): conv 4x4/2 + BN + ReLU (16, 32, 64), dense 100, dense K."""
  num_classes: int = 10
  channels: Sequence[int] = (16, 32, 64)
  hidden: int = 100

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    for c in self.channels:
      x = PatchConv(c, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)), use_bias=False)(x)
      x = nn.relu(BatchNorm(use_running_average=not train, **BN_DEFAULTS)(x))
    x = x.reshape((x.shape[0], -1))
    x = Dense(self.hidden, use_bias=False)(x)
    x = nn.relu(BatchNorm(use_running_average=not train, **BN_DEFAULTS)(x))
    return Dense(self.num_classes)(x)


@MODELS.register("mlp")
class MLP(nn.Module):
  """Four hidden layers of 128 units, each dense + BN + ReLU."""
  num_classes: int = 10
  hidden: Sequence[int] = (128, 128, 128, 128)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = x.reshape((x.shape[0], -1))
    for h in self.hidden:
      x = Dense(h, use_bias=False)(x)
      x = nn.relu(BatchNorm(use_running_average=not train, **BN_DEFAULTS)(x))
    return Dense(self.num_classes)(x)


class _BasicBlock(nn.Module):
  channels: int
  strides: int

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    bn = lambda: BatchNorm(use_running_average=not train, **BN_DEFAULTS)
    y = PatchConv(self.channels, (3, 3), self.strides, padding="SAME", use_bias=False)(x)
    y = nn.relu(bn()(y))
    y = PatchConv(self.channels, (3, 3), padding="SAME", use_bias=False)(y)
    y = bn()(y)
    if x.shape[-1] != self.channels or self.strides != 1:
      x = PatchConv(self.channels, (1, 1), self.strides, use_bias=False)(x)
      x = bn()(x)
    return nn.relu(x + y)


@MODELS.register("resnet")
class SmallResNet(nn.Module):
  """A small pre-pooling ResNet: stem conv, one basic block per stage, global average pool."""
  num_classes: int = 10
  stages: Sequence[int] = (16, 32, 64)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = PatchConv(self.stages[0], (3, 3), padding="SAME", use_bias=False)(x)
    x = nn.relu(BatchNorm(use_running_average=not train, **BN_DEFAULTS)(x))
    for i, c in enumerate(self.stages):
      x = _BasicBlock(c, 1 if i == 0 else 2)(x, train)
    x = jnp.mean(x, axis=(1, 2))
    return Dense(self.num_classes)(x)


def make_model(name: str, num_classes: int, **kwargs) -> nn.Module:
  """Builds a registered classifier; `kwargs` are the module's own fields."""
  if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
    raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
  return MODELS.get(name)(num_classes=num_classes, **kwargs)
