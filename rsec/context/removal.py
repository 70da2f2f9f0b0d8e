"""Object removal with three mask sources: 'gt', 'generated' and 'oracle'.

- gt: the union of the target class's ground-truth instance masks, dilated, filled by
  the in-painter (the CVPR 2019 testing framework);
- generated: the weakly supervised mask generator's mask, filled by the in-painter
  (NeurIPS 2018);
- oracle: SCENES only: the exact scene re-rendered without the target's objects.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from rsec import checks
from rsec.context import masks as masks_lib
from rsec.context.gan import GanState
from rsec.context.inpaint import inpaint
from rsec.context.maskgen import generate_masks
from rsec.data import scenes

SOURCES = ("gt", "generated", "oracle")


def check_images(x) -> None:
  """Raises ValueError unless x is float RGB images [B, H, W, 3], finite, in [0, 1].

  The in-painter composites x outside the hole: a NaN or an out-of-range pixel would pass
  straight into the edited image (and NaN poisons the in-painter's whole output).
  """
  checks.check_shape("x", x, (None, None, None, 3))
  checks.check_float_array("x", x)
  checks.check_in_range("x", x, 0.0, 1.0)


def check_holes(x, m) -> None:
  """Raises ValueError unless m [B, H, W] matches x [B, H, W, 3] and every hole is partial."""
  check_images(x)
  checks.check_shape("mask", m, tuple(x.shape[:3]))
  a = np.asarray(m, np.float32)
  checks.check_all_finite("mask", a)  # NaN would slip through the range test below
  if (a.min() < 0) or (a.max() > 1):
    raise ValueError(f"mask must lie in [0, 1], got values in [{a.min():.4g}, {a.max():.4g}]")
  area = a.reshape(len(a), -1).mean(1)
  if (area == 0).any():
    raise ValueError(f"mask is empty for images {np.flatnonzero(area == 0).tolist()}: "
                     "nothing to remove")
  if (area == 1).any():
    raise ValueError(f"mask covers the whole image for images "
                     f"{np.flatnonzero(area == 1).tolist()}: nothing is left to in-paint from")


def fill_holes(inpainter: GanState, x, m) -> jax.Array:
  """In-paints holes m [B, H, W] in [0, 1] of float images x [B, H, W, 3] in [0, 1]
  (both checked at the boundary: `check_holes`)."""
  check_holes(x, m)
  return inpaint_jit(inpainter, jnp.asarray(x), jnp.asarray(m, jnp.float32))


@jax.jit
def inpaint_jit(state, x, m):
  """`inpaint`, compiled once per shape (shared by removal and the sensitivity study)."""
  return inpaint(state, x, m)


def gt_masks(instance_masks, classes, shown, target, dilation: int = 2) -> jax.Array:
  """Dilated union of the target's visible instance masks: float32 [B, H, W].

  instance_masks bool [B, S, H, W]; classes int [B, S]; shown bool [B, S]; target int [B].
  """
  b = instance_masks.shape[0]
  checks.check_shape("classes", classes, (b, instance_masks.shape[1]))
  checks.check_shape("shown", shown, (b, instance_masks.shape[1]))
  sel = (np.asarray(classes) == np.asarray(target)[:, None]) & np.asarray(shown)
  missing = np.flatnonzero(~sel.any(1))
  if missing.size:
    raise ValueError(f"target class is not present in images {missing.tolist()[:10]}")
  m = (np.asarray(instance_masks) & sel[:, :, None, None]).any(1).astype(np.float32)
  return masks_lib.dilate(jnp.asarray(m), dilation)


def remove_objects(x, target, source: str, *, inpainter: GanState | None = None,
                   mask_generator: GanState | None = None, scene: dict | None = None,
                   dilation: int = 2, size: int | None = None) -> dict:
  """Removes every object of class `target` [B] from images x [B, H, W, 3].

  Args:
    x: float RGB images [B, H, W, 3] in [0, 1] (ValueError otherwise, NaN included).
    source: 'gt' | 'generated' | 'oracle'.
    inpainter: needed for 'gt' and 'generated'.
    mask_generator: needed for 'generated'.
    scene: for 'gt': 'masks' [B, S, H, W], 'shown' [B, S] and 'layout' (its 'cls');
      for 'oracle': 'layout' (and 'shown'). A SCENES batch (`scene_split` rows) works.
  Returns {'image': edited [B, H, W, 3], 'mask': the removed region float32 [B, H, W]}.
  """
  checks.check_choice("mask source", source, SOURCES)
  check_images(x)
  b, h = x.shape[0], x.shape[1]
  target = np.asarray(target)
  if target.shape != (b,) or not np.issubdtype(target.dtype, np.integer) or (target < 0).any():
    raise ValueError(f"target must be non-negative integers of shape ({b},), got "
                     f"{target.dtype} {target.shape}")
  if source in ("gt", "oracle"):
    if scene is None:
      raise ValueError(f"source {source!r} needs scene= (masks, shown, layout)")
    _check_scene(scene, source, b)
    classes = np.asarray(scene["layout"]["cls"])
    checks.check_labels("target", target, int(classes.max()) + 1 if classes.size else 1)
  if source == "oracle":
    sel = (classes == target[:, None]) & np.asarray(scene["shown"])
    missing = np.flatnonzero(~sel.any(1))
    if missing.size:
      raise ValueError(f"target class is not present in images {missing.tolist()[:10]}")
    remove = (classes == target[:, None]) & np.asarray(scene["layout"]["valid"])
    out = scenes.oracle_removal(scene["layout"], jnp.asarray(remove), size=size or h)
    before = np.asarray(scene["amodal"] if "amodal" in scene else
                        scenes.render(scene["layout"], size=size or h)["amodal"])
    return {"image": out["image"], "mask": jnp.asarray((before & remove[:, :, None, None])
                                                      .any(1).astype(np.float32))}
  if inpainter is None:
    raise ValueError(f"source {source!r} needs inpainter=")
  if source == "gt":
    m = gt_masks(scene["masks"], classes, scene["shown"], target, dilation)
  else:
    if mask_generator is None:
      raise ValueError("source 'generated' needs mask_generator=")
    m = masks_lib.dilate(generate_masks_jit(mask_generator, jnp.asarray(x), jnp.asarray(target)),
                         dilation)
    # A generated mask may be empty ("nothing found": the image stays as it is) or
    # cover everything; neither is an input error here.
    filled = inpaint_jit(inpainter, jnp.asarray(x), m)
    keep = m.sum((1, 2))[:, None, None, None] > 0
    return {"image": jnp.where(keep, filled, jnp.asarray(x)), "mask": m}
  return {"image": fill_holes(inpainter, x, m), "mask": m}


_SCENE_KEYS = {"gt": ("masks", "shown", "layout"), "oracle": ("shown", "layout")}
_LAYOUT_KEYS = {"gt": ("cls",), "oracle": ("cls", "valid")}


def _check_scene(scene, source: str, batch: int) -> None:
  """ValueError naming the keys of scene= that `source` reads and `scene` lacks, or a
  scene of another batch size than the images."""
  if not isinstance(scene, dict):
    raise ValueError(f"scene= must be a dict (a SCENES batch), got {type(scene).__name__}")
  missing = [k for k in _SCENE_KEYS[source] if k not in scene]
  layout = scene.get("layout")
  if isinstance(layout, dict):
    missing += [f"layout[{k!r}]" for k in _LAYOUT_KEYS[source] if k not in layout]
  elif "layout" in scene:
    missing.append("layout (a dict)")
  if missing:
    raise ValueError(f"source {source!r} needs scene= with {list(_SCENE_KEYS[source])} "
                     f"(layout holding {list(_LAYOUT_KEYS[source])}); missing {missing}")
  checks.check_shape("scene['shown']", scene["shown"], (batch, None))


@jax.jit
def generate_masks_jit(state, x, t):
  """`generate_masks`, compiled once per shape (shared with sensitivity and remover_eval)."""
  return generate_masks(state, x, t)
