"""Training the mask generator from image-level labels only (Shetty et al., NeurIPS 2018).

For an image x with present classes y [K] and a target t among them, the generator's mask
m is binarised straight-through and scored by a frozen multi-label classifier on two edits:
- deletion (the paper's): the frozen in-painter fills m; t's score must fall and the other
  present classes' scores must stay;
- preservation (Dabkowski & Gal's "smallest sufficient region"): x's pixels inside m are
  pasted onto the next image of the batch; t must be detected there when that image lacks
  t (`preserve`), and x's other classes must not (`exclusive`: covering a neighbour
  pastes it too).
plus a mask-area prior, a total-variation term, a realism critic (a PatchGAN telling
deletions from real images), a bound on the mask logits and, given unpaired ground-truth
masks, the paper's mask-shape prior: a class-conditional critic telling generated masks
from real masks of the same class taken from other images (`unpaired_masks`).

Why preservation: with deletion alone an empty mask is an absorbing state (outside the
mask the fill equals the image, so a pixel gets no removal gradient until it is already
removed), and the quick remover's generator collapsed to empty masks (removal success 0).
Preservation pulls the mask onto the target from any state. Why the logit bound: the
hard forward pass ignores the logits' size, so the losses push them outward until the
sigmoid saturates and the straight-through gradient vanishes: the second way to die.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from rsec.context.gan import GanState, apply_grads, bce_logits, create_gan_state
from rsec.training.steps import all_finite
from rsec.models.inpainter import composite
from rsec.models.mask_generator import MaskGenerator, RemovalCritics, straight_through


def create_maskgen_state(key: jax.Array, size: int, num_classes: int, channels=(16, 32, 64),
                         d_channels=(16, 32, 64), lr: float = 1e-3,
                         d_lr: float = 1e-3) -> GanState:
  x, t = jnp.zeros((1, size, size, 3)), jnp.zeros((1,), jnp.int32)
  return create_gan_state(MaskGenerator(num_classes, tuple(channels)),
                          RemovalCritics(num_classes, tuple(d_channels)), (x, t),
                          (x, x[..., 0], t), key, lr, d_lr)


def unpaired_masks(instance_masks: np.ndarray, classes: np.ndarray, shown: np.ndarray,
                   seed: int) -> dict:
  """Real class masks for the shape prior, unpaired with the images they sit beside.

  instance_masks bool [N, S, H, W], classes int [N, S], shown bool [N, S].
  Returns {'prior_mask': uint8 [N, H, W], 'prior_class': int32 [N]}: row i is the union
  of the visible instances of one uniformly chosen present class (as `sample_targets`
  chooses targets) of a random other image j != i that shows any object.
  """
  n = instance_masks.shape[0]
  rng = np.random.default_rng(seed)
  sel, classes = np.asarray(shown, bool), np.asarray(classes)
  has = np.flatnonzero(sel.any(1))
  if has.size < 2:
    raise ValueError(f"instance_masks: need at least 2 images with a visible object to "
                     f"unpair, got {has.size}")
  source = has[rng.integers(0, has.size, size=n)]
  while np.any(same := source == np.arange(n)):
    source[same] = has[rng.integers(0, has.size, size=int(same.sum()))]
  choice = np.array([rng.choice(np.unique(classes[j][sel[j]])) for j in source], np.int32)
  of_class = sel[source] & (classes[source] == choice[:, None])
  # The union below is `removal.gt_masks` without its jax dilation (and removal imports
  # this module); numpy chunks keep the paper preset's 50,000 images off a 1 GB copy.
  masks = np.empty((n,) + instance_masks.shape[2:], np.uint8)
  for lo in range(0, n, 4096):
    rows = slice(lo, lo + 4096)
    masks[rows] = (np.asarray(instance_masks[source[rows]])
                   & of_class[rows, :, None, None]).any(1)
  return {"prior_mask": masks, "prior_class": choice}


def sample_targets(key: jax.Array, labels: jax.Array) -> jax.Array:
  """One present class per image, uniformly (labels [B, K] in {0, 1}) -> int32 [B]."""
  return jax.random.categorical(key, jnp.where(labels > 0, 0.0, -1e9)).astype(jnp.int32)


def random_shift(key: jax.Array, x: jax.Array, pixels: int) -> jax.Array:
  """Each image of x [B, H, W, C] shifted by its own random offset in [-pixels, pixels]^2
  (edge padding); pixels = 0 returns x."""
  if pixels == 0:
    return x
  b, h, w, ch = x.shape
  padded = jnp.pad(x, ((0, 0), (pixels, pixels), (pixels, pixels), (0, 0)), mode="edge")
  offsets = jax.random.randint(key, (b, 2), 0, 2 * pixels + 1)
  return jax.vmap(lambda im, o: jax.lax.dynamic_slice(im, (o[0], o[1], 0), (h, w, ch)))(
      padded, offsets)


def make_maskgen_step(inpaint_fn: Callable, logits_fn: Callable, *, area_weight: float = 8.0,
                      keep_weight: float = 1.0, preserve_weight: float = 1.0,
                      exclusive_weight: float = 1.0, adv_weight: float = 0.01,
                      smooth_weight: float = 0.2, logit_bound: float = 3.0,
                      bound_weight: float = 1.0, jitter: int = 0,
                      prior_weight: float = 0.0) -> Callable:
  """`step(state, batch, key)`; batch: 'image' [B, H, W, 3], 'targets' [B, K] in {0, 1}
  and, for the shape prior, `unpaired_masks`' 'prior_mask' [B, H, W], 'prior_class' [B].

  inpaint_fn(x, m [B, H, W, 1]) -> G [B, H, W, 3] and logits_fn(x) -> [B, K] are frozen.
  The fill is treated as data (no gradient through the in-painter): the mask learns from
  what the composite shows, which is cheaper and stable. Preservation pairs image i with
  image i - 1 (a roll of the batch), so the batch size must be at least 2.
  Weights: area on the mean binarised area (a fraction of the image), logit_bound on
  mean(relu(|logit| - logit_bound)^2). jitter: the classifier sees both edits shifted by
  a random offset of up to this many pixels (edge padding), so that a mask cannot win by
  exploiting the exact pixel grid (thin strips along the image border; measured).
  prior_weight: the generator's non-saturating loss against the mask critic (needs the
  prior_* batch entries; 0 trains neither).
  """

  def step(state: GanState, batch, key):
    x, y = batch["image"], batch["targets"]
    n = x.shape[0]
    t = sample_targets(key, y)
    onehot = jax.nn.one_hot(t, y.shape[1])
    others = y * (1 - onehot)
    partner, partner_y = jnp.roll(x, 1, axis=0), jnp.roll(y, 1, axis=0)
    lacks_t = 1 - (partner_y * onehot).sum(-1)           # [B]: t is new on the partner
    pasted_others = others * (1 - partner_y)              # x's other classes, new there
    use_prior = prior_weight > 0
    if use_prior and "prior_mask" not in batch:
      raise ValueError("prior_weight > 0 needs batch['prior_mask'] and ['prior_class'] "
                       "(maskgen.unpaired_masks)")

    def g_loss(gp):
      logit = state.g_apply({"params": gp}, x, t)[..., None]
      m = straight_through(jax.nn.sigmoid(logit))
      fill = jax.lax.stop_gradient(inpaint_fn(x, jax.lax.stop_gradient(m)))
      edit = composite(x, m, fill)
      judged = jnp.concatenate([edit, x * m + partner * (1 - m)])
      logits = logits_fn(random_shift(jax.random.fold_in(key, 1), judged, jitter))
      deleted, pasted = logits[:n], logits[n:]
      remove = (jax.nn.softplus(deleted) * onehot).sum(-1).mean()
      keep = ((jax.nn.softplus(-deleted) * others).sum(-1) /
              jnp.maximum(others.sum(-1), 1)).mean()
      preserve = (((jax.nn.softplus(-pasted) * onehot).sum(-1) * lacks_t).sum() /
                  jnp.maximum(lacks_t.sum(), 1))
      exclusive = ((jax.nn.softplus(pasted) * pasted_others).sum() /
                   jnp.maximum(pasted_others.sum(), 1))
      area = m.mean()
      smooth = (jnp.abs(m[:, 1:] - m[:, :-1]).mean() + jnp.abs(m[:, :, 1:] - m[:, :, :-1]).mean())
      bound = (jax.nn.relu(jnp.abs(logit) - logit_bound) ** 2).mean()
      patch, shape = state.d_apply({"params": state.d_params}, edit, m[..., 0], t)
      adv, prior = bce_logits(patch, 1.0), bce_logits(shape, 1.0)
      loss = (remove + keep_weight * keep + preserve_weight * preserve
              + exclusive_weight * exclusive + area_weight * area + smooth_weight * smooth
              + bound_weight * bound + adv_weight * adv + prior_weight * prior)
      return loss, ((edit, m[..., 0]), deleted,
                    dict(remove=remove, keep=keep, preserve=preserve, exclusive=exclusive,
                         area=area, prior=prior))

    (gl, ((edit, m), deleted, parts)), gg = jax.value_and_grad(g_loss, has_aux=True)(
        state.g_params)
    edit, m = jax.lax.stop_gradient(edit), jax.lax.stop_gradient(m)
    real_m = batch["prior_mask"].astype(m.dtype) if use_prior else m
    real_c = batch["prior_class"] if use_prior else t

    def d_loss(dp):
      real_patch, real_shape = state.d_apply({"params": dp}, x, real_m, real_c)
      fake_patch, fake_shape = state.d_apply({"params": dp}, edit, m, t)
      loss = 0.5 * (bce_logits(real_patch, 1.0) + bce_logits(fake_patch, 0.0))
      if use_prior:
        loss += 0.5 * (bce_logits(real_shape, 1.0) + bce_logits(fake_shape, 0.0))
      return loss

    dl, dg = jax.value_and_grad(d_loss)(state.d_params)
    gp, g_opt = apply_grads(state.g_params, state.g_opt, state.g_tx, gg)
    dp, d_opt = apply_grads(state.d_params, state.d_opt, state.d_tx, dg)
    finite = all_finite(gg, dg) & jnp.isfinite(gl)
    new = state.replace(step=state.step + 1, g_params=gp, d_params=dp, g_opt=g_opt,
                        d_opt=d_opt)
    new = jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, state)
    target_score = (jax.nn.sigmoid(deleted) * onehot).sum(-1)
    return new, {"loss": gl, **parts, "d_loss": dl, "success": (target_score < 0.5).mean(),
                 "finite": finite.astype(jnp.float32)}

  return step


def generate_masks(state: GanState, x: jax.Array, target: jax.Array) -> jax.Array:
  """Binary masks float32 [B, H, W] for class `target` (int [B]) in images x."""
  return (jax.nn.sigmoid(state.g_apply({"params": state.g_params}, x, target)) > 0.5
          ).astype(jnp.float32)
