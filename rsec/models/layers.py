"""Layers tuned for XLA:CPU.

`PatchConv` computes a convolution as patch extraction (strided slices) followed by one
matmul. On XLA:CPU, native convolutions inside `lax.scan`/`fori_loop` bodies (where all of
rsec's training steps and attacks run) were measured 5-10x slower than this form, and
its gradients are pads and matmuls, which stay fast. Parameters have `nn.Conv`'s names and
layout (`kernel` [kh, kw, in, out], `bias` [out]), so weights move freely between the two.
A strided convolution whose kernel is a multiple of its stride (the 4x4 / 2 layers of the
paper CNN, the VAE-GAN and the in-painter) takes its patches from a space-to-depth view
(`space_to_depth_patches`): XLA:CPU assembles a concatenation of many narrow slices
slowly, and that view needs (k/s)^2 slices of s^2 C channels instead of k^2 slices of C
(on 2 cores the paper CNN's PGD steps run 1.4x faster, `python -m benchmarks.patch_conv`).

`BatchNorm` is flax's, plus the deterministic cross-shard statistics of the virtual-shard
train step (`rsec.training.steps.make_train_step(virtual_shards=...)`). Inside that step,
`PatchConv` and `Dense` also take their kernel gradients through `matmul`'s fixed form.
"""
from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rsec import parallel


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


def space_to_depth_patches(x: jax.Array, kernel: Sequence[int], stride: int,
                           padding) -> jax.Array:
  """[B, H, W, C] -> [B, Ho, Wo, kh*kw*C] patches of a convolution with equal strides
  `stride` (> 1) along both axes whose kernel sides are multiples of it, ordered (a, b, dy,
  dx, C) with ky = a*stride + dy, kx = b*stride + dx; `space_to_depth_kernel` puts a HWIO
  kernel in that order. The same patches as `extract_patches`, up to that order."""
  (kh, kw), s = kernel, stride
  if s < 2 or kh % s or kw % s:
    raise ValueError(f"kernel {tuple(kernel)} must be a multiple of stride {s} >= 2")
  b, h, w, c = x.shape
  (pt, pb), (pl, pr) = _pads(padding, kernel, (s, s), (h, w))
  ho, wo = (h + pt + pb - kh) // s + 1, (w + pl + pr - kw) // s + 1
  ka, kb = kh // s, kw // s
  # The padded extent the patches read, rounded to whole stride blocks.
  hp, wp = s * (ho + ka - 1), s * (wo + kb - 1)
  x = jnp.pad(x, ((0, 0), (pt, max(hp - h - pt, 0)), (pl, max(wp - w - pl, 0)), (0, 0)))
  x = x[:, :hp, :wp].reshape(b, hp // s, s, wp // s, s * c)
  cols = [jnp.swapaxes(x[:, i:i + ho, :, j:j + wo, :], 2, 3)  # [B, Ho, Wo, s, s*C]
          for i in range(ka) for j in range(kb)]
  return jnp.concatenate(cols, axis=-2).reshape(b, ho, wo, kh * kw * c)


def space_to_depth_kernel(kernel: jax.Array, stride: int) -> jax.Array:
  """A HWIO kernel [kh, kw, C, O] as [kh*kw*C, O] rows in `space_to_depth_patches` order."""
  kh, kw, c, o = kernel.shape
  s = stride
  k = kernel.reshape(kh // s, s, kw // s, s, c, o).transpose(0, 2, 1, 3, 4, 5)
  return k.reshape(kh * kw * c, o)


@jax.custom_vjp
def _fixed_matmul(x: jax.Array, w: jax.Array) -> jax.Array:
  return x @ w


def _fixed_matmul_fwd(x, w):
  return x @ w, (x, w)


def _fixed_matmul_bwd(res, dy):
  x, w = res
  # Autodiff's kernel gradient contracts x and dy over their leading (row) axis. XLA:CPU
  # runs that transposed-operand dot with a kernel whose rounding depends on the size of
  # the process's thread pool (which grows with the fake device count: measured, 4 vs 2
  # devices). A materialised transpose behind an optimization barrier keeps the plain
  # [K, N] @ [N, M] form, whose bits were the same for 1, 2, 4 and 8 devices.
  return dy @ w.T, jax.lax.optimization_barrier(x.T) @ dy


_fixed_matmul.defvjp(_fixed_matmul_fwd, _fixed_matmul_bwd)


def matmul(x: jax.Array, w: jax.Array) -> jax.Array:
  """x [..., K] @ w [K, M] -> [..., M]; the same numbers as `x @ w`.

  Inside the deterministic train step (`rsec.parallel.batch_stats_plan`) the gradients go
  through a fixed form so that they have the same bits on every device layout.
  """
  if parallel.current_batch_stats_plan() is None:
    return x @ w
  lead = x.shape[:-1]
  return _fixed_matmul(x.reshape(-1, x.shape[-1]), w).reshape(lead + (w.shape[-1],))


def _dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
  """`lax.dot_general` for `nn.Dense`, routed through `matmul` in the deterministic step."""
  (contract, batch) = dimension_numbers
  plain = (tuple(map(tuple, contract)), tuple(map(tuple, batch))) == (
      ((lhs.ndim - 1,), (0,)), ((), ()))
  if parallel.current_batch_stats_plan() is None or rhs.ndim != 2 or not plain:
    return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                               preferred_element_type=preferred_element_type)
  return matmul(lhs, rhs)


class Dense(nn.Dense):
  """`flax.linen.Dense` (same variables and numbers) whose kernel gradient in the
  deterministic train step has the same bits on every device layout (see `matmul`)."""
  dot_general: Callable = _dot_general


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
    s = strides[0]
    if s > 1 and strides[1] == s and kh % s == 0 and kw % s == 0:
      p = space_to_depth_patches(x, (kh, kw), s, self.padding)
      y = matmul(p, space_to_depth_kernel(kernel, s))
    else:
      p = extract_patches(x, (kh, kw), strides, self.padding)
      y = matmul(p, kernel.reshape(-1, self.features))
    if self.use_bias:
      y = y + self.param("bias", self.bias_init, (self.features,))
    return y


class BatchNorm(nn.BatchNorm):
  """`flax.linen.BatchNorm` with a deterministic cross-shard mode; same variables.

  Outside `rsec.parallel.batch_stats_plan` (the default) this is flax's BatchNorm
  unchanged: same code, numerics, parameter ('scale', 'bias') and 'batch_stats' ('mean',
  'var') names, so checkpoints move freely between the two. Inside it (the deterministic
  train step, which runs the model on one virtual shard at a time), a training-mode call
  records its shard's sums of x and x^2 and normalises with the global sums the plan
  provides, so the statistics are those of the whole global batch, computed in a fixed
  order. Same formula as flax's default (E[x^2] - E[x]^2, clipped at 0).
  """

  @nn.compact
  def __call__(self, x, use_running_average: bool | None = None, *, mask=None):
    plan = parallel.current_batch_stats_plan()
    use_ra = nn.merge_param("use_running_average", self.use_running_average,
                            use_running_average)
    if plan is None or use_ra or self.is_initializing():
      return super().__call__(x, use_running_average, mask=mask)
    if mask is not None or self.axis != -1 or not self.use_fast_variance:
      raise ValueError("deterministic BatchNorm supports axis=-1, use_fast_variance=True "
                       "and no mask")
    axes = tuple(range(x.ndim - 1))
    features = (x.shape[-1],)
    xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    partial = jnp.stack([xf.sum(axes), jnp.square(xf).sum(axes)])
    i = len(plan.partials)
    plan.partials.append(partial)
    sums = jnp.zeros_like(partial) if plan.stats is None else plan.stats[i]
    count = plan.num_shards * int(np.prod([x.shape[a] for a in axes]))
    mean, mean2 = sums[0] / count, sums[1] / count
    var = jnp.maximum(0.0, mean2 - jnp.square(mean))
    ra_mean = self.variable("batch_stats", "mean", lambda s: jnp.zeros(s, jnp.float32),
                            features)
    ra_var = self.variable("batch_stats", "var", lambda s: jnp.ones(s, jnp.float32), features)
    ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
    ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    mul = jax.lax.rsqrt(var + self.epsilon)
    if self.use_scale:
      mul = mul * self.param("scale", self.scale_init, features, self.param_dtype)
    y = (xf - mean) * mul
    if self.use_bias:
      y = y + self.param("bias", self.bias_init, features, self.param_dtype)
    return y.astype(self.dtype or jnp.result_type(x, self.param_dtype))
