"""Online removal augmentation ('context_augment'): objects removed inside the train step.

One more "perturb the batch, then step" mode (`rsec.training.steps.make_train_step`): with
probability p per image, one present class c is drawn; c's objects, or (half the time, if
the image holds any) the things the context rules tie to c, are removed by re-rendering
the SCENES layout without them (the oracle), and the targets become the labels of what is
still visible. Every step sees fresh removals, unlike the offline `removal_augment`.

SCENES layouts are dicts of arrays; they ride along in a batch flattened under the keys
'layout/<field>' (`flatten_layout`).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from rsec import checks
from rsec.data import scenes

PREFIX = "layout/"


def flatten_layout(layout: dict) -> dict[str, np.ndarray]:
  """{'layout/<field>': array [N, ...]} for the per-example arrays of `fit`'s data."""
  return {PREFIX + k: v for k, v in layout.items()}


def unflatten_layout(batch: dict) -> dict:
  return {k[len(PREFIX):]: v for k, v in batch.items() if k.startswith(PREFIX)}


def _batch_layouts(batch: dict, mode: str) -> dict:
  layouts = unflatten_layout(batch)
  if "cls" not in layouts:
    raise ValueError(f"{mode} needs the scene layouts in the batch "
                     "(flatten_layout(data['layout']))")
  return layouts


def make_context_augment(ctx: np.ndarray, size: int, prob: float,
                         semantic_key: str | None = None) -> Callable:
  """perturb(variables, key, batch) -> batch for SCENES training (multi-label or segmentation).

  Args:
    ctx: bool [K, K] context table (`rsec.context.sensitivity.context_table`).
    size: image side of the batch's images.
    prob: probability that an image (with at least one object) gets a removal.
    semantic_key: for segmentation, the batch key of the per-pixel labels [B, H, W]; they
      become the oracle's labels of the edited scene (what lies behind the removed objects).
  The batch holds 'image' [B, size, size, 3], 'targets' [B, K] and the flattened layout;
  'image', 'targets' (and `semantic_key`) are replaced, everything else is kept.
  """
  checks.check_finite_scalar("prob", prob, low=0.0, high=1.0)
  ctx = jnp.asarray(ctx, bool)

  def choose(key, targets):
    """The classes [K] to remove from one image."""
    k1, k2 = jax.random.split(key)
    present = targets > 0
    c = jax.random.categorical(k1, jnp.where(present, 0.0, -jnp.inf))
    context = ctx[c] & present
    use_context = context.any() & (jax.random.uniform(k2) < 0.5)
    return jnp.where(use_context, context, jax.nn.one_hot(c, ctx.shape[0]) > 0)

  def perturb(variables, key, batch):
    del variables
    layouts = _batch_layouts(batch, "context_augment")
    x, targets = batch["image"], batch["targets"]
    b = x.shape[0]
    k_cls, k_apply = jax.random.split(key)
    remove_cls = jax.vmap(choose)(jax.random.split(k_cls, b), targets)          # [B, K]
    remove = jnp.take_along_axis(remove_cls, layouts["cls"], 1) & layouts["valid"]
    out = scenes.render_traceable(layouts, ~remove, size)
    apply = (jax.random.uniform(k_apply, (b,)) < prob) & (targets.sum(1) > 0)
    return _take_rendered(batch, apply, out, semantic_key)

  return perturb


def _take_rendered(batch: dict, apply: jax.Array, out: dict, semantic_key: str | None) -> dict:
  """The batch with rows `apply` [B] replaced by the re-rendered scenes `out`: 'image',
  'targets' (when the batch holds them) and `semantic_key`'s per-pixel labels."""
  def pick(new, old):
    return jnp.where(apply.reshape((-1,) + (1,) * (old.ndim - 1)), new.astype(old.dtype), old)
  result = dict(batch, image=pick(out["image"], batch["image"]))
  if "targets" in batch:
    result["targets"] = pick(out["labels"], batch["targets"])
  if semantic_key is not None:
    result[semantic_key] = pick(out["semantic"], batch[semantic_key])
  return result


def make_stuff_swap(bands: np.ndarray, size: int, prob: float,
                    semantic_key: str | None = None) -> Callable:
  """perturb(variables, key, batch) -> batch that moves scenes' things onto other stuff.

  A diagnostic, not removal: with probability `prob` per image the scene type becomes
  another one (uniformly), i.e. the stuff bands are those of that type, and the scene is
  re-rendered with every thing where it stood (same place, size, colour; so things stand
  on stuff they are not tied to, as out of context). Removal cannot do this: it takes
  things away but never changes the stuff a thing stands on.

  Args:
    bands: int [T, 4] stuff of each band per scene type (`scene_rules.make_tables`), T >= 2.
    size, semantic_key: as in `make_context_augment`; 'targets', when the batch holds
      them, become the re-rendered labels (stuff does not occlude: they do not change).
  """
  checks.check_finite_scalar("prob", prob, low=0.0, high=1.0)
  bands = jnp.asarray(bands, jnp.int32)
  if bands.ndim != 2 or bands.shape[0] < 2:
    raise ValueError(f"bands must be [T >= 2, 4] (one row per scene type), got shape "
                     f"{tuple(bands.shape)}")

  def perturb(variables, key, batch):
    del variables
    layouts = _batch_layouts(batch, "stuff swap")
    x = batch["image"]
    b, t = x.shape[0], bands.shape[0]
    k_type, k_apply = jax.random.split(key)
    other = (layouts["scene"] + jax.random.randint(k_type, (b,), 1, t)) % t
    apply = jax.random.uniform(k_apply, (b,)) < prob
    scene = jnp.where(apply, other, layouts["scene"])
    out = scenes.render_traceable(dict(layouts, scene=scene, bands=bands[scene]),
                                  jnp.ones_like(layouts["valid"]), size)
    return _take_rendered(batch, apply, out, semantic_key)

  return perturb
