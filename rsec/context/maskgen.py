"""Training the mask generator from image-level labels only (Shetty et al., NeurIPS 2018).

For an image x with present classes y [K] and a target t among them, the generator's mask
is binarised straight-through, the frozen in-painter fills it, and a frozen multi-label
classifier scores the edit. Losses: the target's score goes to 0, the other present
classes' scores stay at 1, a mask-size prior (mean area), and a realism critic (a
PatchGAN telling edits from real images).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from rsec.context.gan import GanState, all_finite, apply_grads, bce_logits, create_gan_state
from rsec.models.inpainter import PatchDiscriminator, composite
from rsec.models.mask_generator import MaskGenerator, straight_through


def create_maskgen_state(key: jax.Array, size: int, num_classes: int, channels=(16, 32, 64),
                         d_channels=(16, 32, 64), lr: float = 1e-3,
                         d_lr: float = 1e-3) -> GanState:
  x = jnp.zeros((1, size, size, 3))
  return create_gan_state(MaskGenerator(num_classes, tuple(channels)),
                          PatchDiscriminator(tuple(d_channels)), (x, jnp.zeros((1,), jnp.int32)),
                          (x,), key, lr, d_lr)


def sample_targets(key: jax.Array, labels: jax.Array) -> jax.Array:
  """One present class per image, uniformly (labels [B, K] in {0, 1}) -> int32 [B]."""
  return jax.random.categorical(key, jnp.where(labels > 0, 0.0, -1e9)).astype(jnp.int32)


def make_maskgen_step(inpaint_fn: Callable, logits_fn: Callable, *, area_weight: float = 1.0,
                      keep_weight: float = 1.0, adv_weight: float = 0.01,
                      smooth_weight: float = 0.05) -> Callable:
  """`step(state, batch, key)`; batch: 'image' [B, H, W, 3], 'targets' [B, K].

  inpaint_fn(x, m [B, H, W, 1]) -> G [B, H, W, 3] and logits_fn(x) -> [B, K] are frozen.
  """

  def step(state: GanState, batch, key):
    x, y = batch["image"], batch["targets"]
    t = sample_targets(key, y)
    onehot = jax.nn.one_hot(t, y.shape[1])
    others = y * (1 - onehot)

    def g_loss(gp):
      soft = jax.nn.sigmoid(state.g_apply({"params": gp}, x, t))[..., None]
      m = straight_through(soft)
      edit = composite(x, m, inpaint_fn(x, m))
      logits = logits_fn(edit)
      remove = (jax.nn.softplus(logits) * onehot).sum(-1).mean()
      keep = ((jax.nn.softplus(-logits) * others).sum(-1) /
              jnp.maximum(others.sum(-1), 1)).mean()
      area = soft.mean()
      smooth = (jnp.abs(soft[:, 1:] - soft[:, :-1]).mean() +
                jnp.abs(soft[:, :, 1:] - soft[:, :, :-1]).mean())
      adv = bce_logits(state.d_apply({"params": state.d_params}, edit), 1.0)
      loss = (remove + keep_weight * keep + area_weight * area + smooth_weight * smooth
              + adv_weight * adv)
      return loss, (edit, remove, keep, area, logits)

    (gl, (edit, remove, keep, area, logits)), gg = jax.value_and_grad(
        g_loss, has_aux=True)(state.g_params)
    edit = jax.lax.stop_gradient(edit)

    def d_loss(dp):
      return 0.5 * (bce_logits(state.d_apply({"params": dp}, x), 1.0) +
                    bce_logits(state.d_apply({"params": dp}, edit), 0.0))

    dl, dg = jax.value_and_grad(d_loss)(state.d_params)
    gp, g_opt = apply_grads(state.g_params, state.g_opt, state.g_tx, gg)
    dp, d_opt = apply_grads(state.d_params, state.d_opt, state.d_tx, dg)
    finite = all_finite(gg, dg) & jnp.isfinite(gl)
    new = state.replace(step=state.step + 1, g_params=gp, d_params=dp, g_opt=g_opt,
                        d_opt=d_opt)
    new = jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, state)
    target_score = (jax.nn.sigmoid(logits) * onehot).sum(-1)
    return new, {"loss": gl, "remove": remove, "keep": keep, "area": area, "d_loss": dl,
                 "success": (target_score < 0.5).mean(),
                 "finite": finite.astype(jnp.float32)}

  return step


def generate_masks(state: GanState, x: jax.Array, target: jax.Array) -> jax.Array:
  """Binary masks float32 [B, H, W] for class `target` (int [B]) in images x."""
  return (jax.nn.sigmoid(state.g_apply({"params": state.g_params}, x, target)) > 0.5
          ).astype(jnp.float32)
