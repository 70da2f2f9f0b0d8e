"""The zoo's super-network over a whole stack at once, models on the last axis ("lanes").

`zoo_net.apply` is one model; `jax.vmap` of it puts the M models first, and XLA:CPU then
runs each 5x5 convolution as im2col slices of 4 channels and M small matmuls. With the
models on the *minor* axis instead, a convolution is one fused loop of multiply-adds over
[B, H, W, M] arrays whose contiguous M axis fills the vector lanes (16 models per AVX-512
register), with no im2col buffer. Measured on 2 cores: one conv layer's forward ~10x
faster (32 models x 64 images), the whole forward ~3x, forward + backward 1.9x (128 x 32;
the kernel gradient, a reduction over batch and pixels, is what remains slow;
BUILD_NOTES.md). Per model it is the same maths as `zoo_net.apply`, tested against it
(dropout masks included).

Layout: `to_lanes(tree)` moves the leading model axis of every leaf to the end
([M, ...] -> [..., M]; [M] leaves unchanged), `from_lanes` moves it back. Keep a stack in
this layout for the whole training run, not only inside a step: transposing inside the
compiled step lets XLA pick layouts whose strided reads cost most of the gain.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from rsec.reverse import zoo_net


def to_lanes(tree):
  """Every leaf [M, ...] -> [..., M] (leaves [M] unchanged)."""
  return jax.tree.map(lambda a: jnp.moveaxis(a, 0, -1) if jnp.ndim(a) > 1 else a, tree)


def from_lanes(tree):
  """Inverse of `to_lanes`: every leaf [..., M] -> [M, ...]."""
  return jax.tree.map(lambda a: jnp.moveaxis(a, -1, 0) if jnp.ndim(a) > 1 else a, tree)


# ------------------------------------------------------------------ the convolution

def _correlate(x: jax.Array, w: jax.Array) -> jax.Array:
  """'SAME' cross-correlation of x [B, H, W, C, M] with w [k, k, C, D, M] -> [B, H, W, D, M]:
  k*k*C multiply-adds per output, each an elementwise product of [B, H, W, M] arrays."""
  k, c, d, m = w.shape[0], w.shape[2], w.shape[3], w.shape[4]
  h, wd = x.shape[1], x.shape[2]
  # Rows of one 2-D array: the reshape makes XLA store the kernel with M contiguous.
  rows = w.reshape(k * k * c * d, m)
  pad = jnp.pad(x, ((0, 0), (k // 2, k // 2), (k // 2, k // 2), (0, 0), (0, 0)))
  outs = []
  for o in range(d):
    acc = 0.0
    for i in range(k):
      for j in range(k):
        for ci in range(c):
          acc = acc + pad[:, i:i + h, j:j + wd, ci] * rows[((i * k + j) * c + ci) * d + o]
    outs.append(acc)
  return jnp.stack(outs, axis=3)


@jax.custom_vjp
def conv(x: jax.Array, w: jax.Array) -> jax.Array:
  """Per-model 'SAME' convolution of a stack: x [B, H, W, C, M], w [k, k, C, D, M]."""
  return _correlate(x, w)


def _conv_fwd(x, w):
  return _correlate(x, w), (x, w)


def _conv_bwd(res, g):
  x, w = res
  k, h, wd = w.shape[0], x.shape[1], x.shape[2]
  # The input gradient is the correlation with the flipped, transposed kernel.
  dx = _correlate(g, jnp.swapaxes(w[::-1, ::-1], 2, 3))
  # The kernel gradient, tap by tap: a reduction over batch and pixels (autodiff of the
  # forward builds k*k*C*D separate reductions: 2.5x slower).
  pad = jnp.pad(x, ((0, 0), (k // 2, k // 2), (k // 2, k // 2), (0, 0), (0, 0)))
  dw = jnp.stack([jnp.stack([
      jnp.sum(pad[:, i:i + h, j:j + wd, :, None, :] * g[:, :, :, None, :, :], axis=(0, 1, 2))
      for j in range(k)]) for i in range(k)])
  return dx, dw


conv.defvjp(_conv_fwd, _conv_bwd)


# ------------------------------------------------------------------ the super-network

def dropout_masks(keys: jax.Array, keep: jax.Array, shape: tuple[int, int]) -> list:
  """Per-model keep masks [M, B, hidden] of the hidden dense layers, drawn from each
  model's dropout key exactly as `zoo_net.apply` draws them (so the two agree bit for bit)."""
  def one(key, p):
    ks = jax.random.split(key, zoo_net.MAX_FC)
    return [jax.random.bernoulli(ks[j], p, shape) for j in range(zoo_net.MAX_FC - 1)]
  return jax.vmap(one)(keys, keep)


def apply(params: dict, arch: dict, x: jax.Array, *, train: bool = False,
          keys: jax.Array | None = None, dropout: float = 0.5) -> jax.Array:
  """Logits [M, B, K] of a stack of M zoo models on their own images x [M, B, H, W, C].

  params: `to_lanes` of the stacked `zoo_net.init_params` (leaves [..., M]); arch: int32
  attribute indices [M]. In training mode with `keys` [M] (each model's dropout key, as
  `zoo_net.apply` takes it in rngs['dropout']), dropout where drop = yes.
  """
  n_conv = jnp.asarray(zoo_net.ARCH_ATTRIBUTES["conv"])[arch["conv"]]   # [M]
  n_fc = jnp.asarray(zoo_net.ARCH_ATTRIBUTES["fc"])[arch["fc"]]
  mask = zoo_net.kernel_mask(arch["ks"])[..., None, :]                   # [5, 5, 1, 1, M]
  h = jnp.moveaxis(x.astype(jnp.float32), 0, -1)                           # [B, H, W, C, M]
  for i in range(zoo_net.MAX_CONV):
    q = params[f"conv{i}"]
    z = zoo_net.activate(conv(h, q["w"] * mask) + q["b"], arch["act"], q["slope"])
    h = zoo_net.downsample(z, arch["pool"]) if i < 2 else jnp.where(i < n_conv, z, h)
  # Dense layers model-major: M small matmuls (the dot copies its operands as it needs).
  b = h.shape[0]
  h = jnp.moveaxis(h.reshape(b, -1, h.shape[-1]), -1, 0)                   # [M, B, F]
  per_model = lambda a: a[:, None, None]

  def dense(h, q):
    return (jnp.einsum("mbf,mfo->mbo", h, jnp.moveaxis(q["w"], -1, 0))
            + jnp.moveaxis(q["b"], -1, 0)[:, None])
  masks = None
  if train and keys is not None:
    keep = 1.0 - dropout * arch["drop"].astype(jnp.float32)                 # [M]
    masks = dropout_masks(keys, keep, (b, params["fc0"]["w"].shape[1]))
  for j in range(zoo_net.MAX_FC - 1):
    q = params[f"fc{j}"]
    z = zoo_net.activate(dense(h, q), per_model(arch["act"]),
                         jnp.moveaxis(q["slope"], -1, 0)[:, None])
    if masks is not None:
      z = jnp.where(masks[j], z / per_model(keep), 0.0)
    h = z if j == 0 else jnp.where(per_model(j < n_fc - 1), z, h)
  return dense(h, params[f"fc{zoo_net.MAX_FC - 1}"])


def shared_probs(params: dict, arch: dict, x: jax.Array) -> jax.Array:
  """Softmax posteriors [M, B, K] of a lanes stack (eval mode) on images x [B, ...] that
  all M models see."""
  m = arch["act"].shape[0]
  return jax.nn.softmax(apply(params, arch, jnp.broadcast_to(x, (m,) + x.shape)), -1)
