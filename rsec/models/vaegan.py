"""VAE-GAN (Larsen et al. 2016) as used by Stutz, Hein, Schiele (CVPR 2019) for learned manifolds.

Encoder: conv 4x4 stride 2 + BatchNorm + ReLU (64, 128, 256) -> dense mu, log sigma^2.
Decoder: dense -> s x s x 256 (+ BN + ReLU) -> transposed convs (128, 64) + BN + ReLU ->
  transposed conv to the image channels -> sigmoid, mirroring the encoder's sizes
  (28 -> 14 -> 7 -> 3 and back: 3 -> 7 -> 14 -> 28).
Discriminator: the paper's classifier with one logit (real vs reconstructed).
All take/return images [B, H, W, C] float32 in [0, 1]; latents are [B, latent_dim].
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax

from rsec.models.classifiers import BN_DEFAULTS, PaperClassifier
from rsec.models.layers import BatchNorm, PatchConv
from rsec.models.layers_transpose import PatchConvTranspose



def encoder_sizes(size: int, depth: int) -> list[int]:
  """Spatial sizes after each conv 4x4 / 2 / pad 1: [size, size//2, ...], depth + 1 entries."""
  out = [size]
  for _ in range(depth):
    out.append((out[-1] + 2 - 4) // 2 + 1)
  return out


def _up_layer(n: int, target: int) -> tuple[int, int]:
  """(kernel, padding) of a stride-2 transposed conv mapping n to target (2n or 2n + 1)."""
  if target == 2 * n:
    return 4, 1
  if target == 2 * n + 1:
    return 3, 0
  raise ValueError(f"cannot upsample {n} to {target} with one stride-2 transposed conv")


class Encoder(nn.Module):
  """x [B, H, W, C] -> (mu [B, d], logvar [B, d])."""
  latent_dim: int = 10
  channels: Sequence[int] = (64, 128, 256)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
    for c in self.channels:
      x = PatchConv(c, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)), use_bias=False)(x)
      x = nn.relu(BatchNorm(use_running_average=not train, **BN_DEFAULTS)(x))
    x = x.reshape((x.shape[0], -1))
    return nn.Dense(self.latent_dim)(x), nn.Dense(self.latent_dim)(x)


class Decoder(nn.Module):
  """z [B, d] -> images [B, size, size, out_channels] in (0, 1)."""
  size: int = 28
  out_channels: int = 1
  channels: Sequence[int] = (256, 128, 64)

  @nn.compact
  def __call__(self, z: jax.Array, train: bool = False) -> jax.Array:
    sizes = encoder_sizes(self.size, len(self.channels))[::-1]
    x = nn.Dense(sizes[0] * sizes[0] * self.channels[0], use_bias=False)(z)
    x = nn.relu(BatchNorm(use_running_average=not train, **BN_DEFAULTS)(x))
    x = x.reshape((z.shape[0], sizes[0], sizes[0], self.channels[0]))
    outs = list(self.channels[1:]) + [self.out_channels]
    for i, c in enumerate(outs):
      k, p = _up_layer(sizes[i], sizes[i + 1])
      last = i == len(outs) - 1
      x = PatchConvTranspose(c, (k, k), (2, 2), p, use_bias=last)(x)
      if not last:
        x = nn.relu(BatchNorm(use_running_average=not train, **BN_DEFAULTS)(x))
    return nn.sigmoid(x)


class Discriminator(PaperClassifier):
  """x [B, H, W, C] -> logit [B] (real > 0): the paper's classifier with one output."""
  num_classes: int = 1

  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    return super().__call__(x, train)[:, 0]


def make_vaegan(latent_dim: int, size: int, channels: Sequence[int] = (64, 128, 256),
                disc_channels: Sequence[int] = (16, 32, 64), out_channels: int = 1
                ) -> tuple[Encoder, Decoder, Discriminator]:
  """The three modules; `channels` are the encoder's (the decoder mirrors them)."""
  if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
    raise ValueError(f"latent_dim must be a positive integer, got {latent_dim!r}")
  if len(encoder_sizes(size, len(channels))) and encoder_sizes(size, len(channels))[-1] < 1:
    raise ValueError(f"size={size} is too small for {len(channels)} stride-2 convolutions")
  return (Encoder(latent_dim, tuple(channels)),
          Decoder(size, out_channels, tuple(channels)[::-1]),
          Discriminator(channels=tuple(disc_channels)))
