"""Training and applying the in-painter: L1 reconstruction + PatchGAN adversarial loss.

Batches hold 'image' [B, H, W, 3] in [0, 1], 'masks' bool [B, S, H, W] (object masks of
the scene, only used as hole *shapes* for other images) and 'shown' bool [B, S].
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from rsec import checks
from rsec.context import masks as masks_lib
from rsec.context.gan import GanState, apply_grads, bce_logits, create_gan_state
from rsec.training.steps import all_finite
from rsec.models.inpainter import Inpainter, PatchDiscriminator, composite


def create_inpainter_state(key: jax.Array, size: int, channels=(16, 32, 64),
                           d_channels=(16, 32, 64), lr: float = 1e-3,
                           d_lr: float = 1e-3, coarse_iters: int = 0) -> GanState:
  """A fresh in-painter + PatchGAN state for size x size RGB images."""
  x, m = jnp.zeros((1, size, size, 3)), jnp.zeros((1, size, size, 1))
  return create_gan_state(Inpainter(channels=tuple(channels), coarse_iters=coarse_iters),
                          PatchDiscriminator(channels=tuple(d_channels)), (x, m), (x,), key,
                          lr, d_lr)


def make_inpaint_step(size: int, *, adv_weight: float = 0.01, valid_weight: float = 0.2,
                      object_fraction: float = 0.5, dilation: int = 2,
                      stuff_only: bool = True) -> Callable:
  """`step(state, batch, key) -> (state, metrics)` for the in-painter and its critic.

  Generator loss: L1 in the hole (mean over hole pixels) + `valid_weight` x L1 of the raw
  output outside it + `adv_weight` x non-saturating GAN loss on the composite.
  stuff_only: the hole L1 counts only pixels whose target is stuff (no object in this
  image there). Object-shaped holes often land on objects (objects stand in the same
  places); learning to redraw them teaches the remover to put objects back.
  """
  checks.check_finite_scalar("adv_weight", adv_weight, low=0.0)
  checks.check_finite_scalar("valid_weight", valid_weight, low=0.0)

  def step(state: GanState, batch, key):
    x = batch["image"]
    m = masks_lib.training_holes(key, batch["masks"], batch["shown"], size,
                                 object_fraction, dilation)[..., None]

    w = m
    if stuff_only:
      w = m * (1.0 - batch["masks"].any(1).astype(m.dtype))[..., None]

    def g_loss(gp):
      g = state.g_apply({"params": gp}, x, m)
      out = composite(x, m, g)
      hole = (jnp.abs(g - x) * w).sum() / jnp.maximum(w.sum() * 3, 1)
      valid = (jnp.abs(g - x) * (1 - m)).mean()
      adv = bce_logits(state.d_apply({"params": state.d_params}, out), 1.0)
      return hole + valid_weight * valid + adv_weight * adv, (out, hole, adv)

    (gl, (out, hole, adv)), gg = jax.value_and_grad(g_loss, has_aux=True)(state.g_params)
    out = jax.lax.stop_gradient(out)

    def d_loss(dp):
      real = state.d_apply({"params": dp}, x)
      fake = state.d_apply({"params": dp}, out)
      return 0.5 * (bce_logits(real, 1.0) + bce_logits(fake, 0.0))

    dl, dg = jax.value_and_grad(d_loss)(state.d_params)
    gp, g_opt = apply_grads(state.g_params, state.g_opt, state.g_tx, gg)
    dp, d_opt = (apply_grads(state.d_params, state.d_opt, state.d_tx, dg)
                 if adv_weight > 0 else (state.d_params, state.d_opt))
    finite = all_finite(gg, dg) & jnp.isfinite(gl) & jnp.isfinite(dl)
    new = state.replace(step=state.step + 1, g_params=gp, d_params=dp, g_opt=g_opt,
                        d_opt=d_opt)
    new = jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, state)
    return new, {"loss": gl, "l1_hole": hole, "adv": adv, "d_loss": dl,
                 "finite": finite.astype(jnp.float32)}

  return step


def inpaint(state_or_params, x: jax.Array, m: jax.Array, apply_fn: Callable | None = None
            ) -> jax.Array:
  """Fills holes m [B, H, W] (1 = hole) of x [B, H, W, 3] and composites the result."""
  if isinstance(state_or_params, GanState):
    params, apply_fn = state_or_params.g_params, state_or_params.g_apply
  else:
    params = state_or_params
  mm = m[..., None].astype(x.dtype)
  return composite(x, mm, apply_fn({"params": params}, x, mm))
