"""Evaluating a remover on SCENES: hole PSNR against the oracle, removal success, mask IoU.

Each test image gets one target class (a shown object's class, seeded); all its
objects are removed with each mask source and compared.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from rsec.context import masks as masks_lib
from rsec.context import removal
from rsec.context.gan import GanState
from rsec.context.multilabel import predict


def pick_targets(shown: np.ndarray, classes: np.ndarray, seed: int) -> np.ndarray:
  """A shown object's class per image (int32 [N]); images with none get -1."""
  rng = np.random.default_rng(seed)
  out = -np.ones(len(shown), np.int32)
  for i, row in enumerate(shown):
    idx = np.flatnonzero(row)
    if idx.size:
      out[i] = classes[i, rng.choice(idx)]
  return out


def _rows(data: dict, idx: np.ndarray) -> dict:
  return jax.tree.map(lambda a: a[idx], {k: data[k] for k in
                                         ("image", "masks", "shown", "amodal", "layout",
                                          "labels")})


def evaluate_remover(data: dict, inpainter: GanState, mask_generator: GanState | None,
                     score_fn, *, seed: int = 0, dilation: int = 2, batch_size: int = 128,
                     blur_iters: int = 200) -> tuple[dict, dict]:
  """Returns (flat results, example arrays for a figure) over a SCENES split `data`.

  *_psnr_hole: PSNR of the squared error pooled over every hole pixel of the split (GT
  masks, dilated) against the oracle scene without the target's objects.

  score_fn: the *independent* classifier's x -> probabilities [B, K].
  """
  targets = pick_targets(data["shown"], data["layout"]["cls"], seed)
  keep = np.flatnonzero(targets >= 0)
  size = data["image"].shape[1]
  acc: dict[str, list] = {}
  examples = None
  for i in range(0, len(keep), batch_size):
    idx = keep[i:i + batch_size]
    rows, t = _rows(data, idx), targets[idx]
    x = rows["image"]
    oracle = removal.remove_objects(x, t, "oracle", scene=rows, size=size)
    gt = removal.remove_objects(x, t, "gt", inpainter=inpainter, scene=rows, dilation=dilation)
    hole = np.asarray(gt["mask"])
    target_img = np.asarray(oracle["image"])
    fills = {"inpainter": gt["image"], "mean_fill": masks_lib.mean_fill(jnp.asarray(x), hole),
             "blur_fill": _blur(jnp.asarray(x), jnp.asarray(hole), blur_iters)}
    for name, pred in fills.items():
      se, count = masks_lib.hole_squared_error(pred, target_img, hole)
      acc.setdefault(f"{name}_se", []).append(se)
      acc.setdefault(f"{name}_px", []).append(count)
      acc.setdefault(name, []).append(masks_lib.psnr_in_hole(pred, target_img, hole))
    before = predict(score_fn, x)
    edits = {"gt": np.asarray(gt["image"]), "oracle": target_img}
    if mask_generator is not None:
      gen = removal.remove_objects(x, t, "generated", inpainter=inpainter,
                                   mask_generator=mask_generator, dilation=dilation)
      edits["generated"] = np.asarray(gen["image"])
      raw = np.asarray(removal.generate_masks_jit(mask_generator, jnp.asarray(x), jnp.asarray(t)))
      truth = np.asarray(removal.gt_masks(rows["masks"], rows["layout"]["cls"], rows["shown"],
                                          t, dilation=0))
      inter, union = (raw * truth).sum((1, 2)), np.maximum(raw, truth).sum((1, 2))
      acc.setdefault("iou", []).append(inter / np.maximum(union, 1))
      acc.setdefault("gen_area", []).append(raw.mean((1, 2)))
    for name, img in edits.items():
      after = predict(score_fn, img)
      onehot = np.eye(before.shape[1])[t] > 0
      det = before > 0.5
      tgt_det = det[onehot]
      acc.setdefault(f"{name}_success", []).append(
          np.where(tgt_det, after[onehot] < 0.5, np.nan))
      others = det & ~onehot & (rows["labels"] > 0)
      lost = (others & (after < 0.5)).sum(1)
      acc.setdefault(f"{name}_lost", []).append(lost)
      acc.setdefault(f"{name}_others", []).append(others.sum(1))
    if examples is None:
      examples = dict(image=x[:8], target=t[:8], **{k: v[:8] for k, v in edits.items()},
                      gt_mask=hole[:8])
  cat = {k: np.concatenate([np.asarray(v) for v in vs]) for k, vs in acc.items()}
  res = {"eval_images": int(len(keep))}
  for name in ("inpainter", "mean_fill", "blur_fill"):
    mse = cat[f"{name}_se"].sum() / max(cat[f"{name}_px"].sum(), 1)
    res[f"{name}_psnr_hole"] = float(-10 * np.log10(max(mse, 1e-10)))
    res[f"{name}_psnr_hole_per_image_median"] = float(np.median(cat[name]))
  res["baseline_psnr_hole"] = max(res["mean_fill_psnr_hole"], res["blur_fill_psnr_hole"])
  res["inpainter_gain_db"] = res["inpainter_psnr_hole"] - res["baseline_psnr_hole"]
  for name in ("gt", "oracle", "generated"):
    if f"{name}_success" not in cat:
      continue
    res[f"{name}_removal_success"] = float(np.nanmean(cat[f"{name}_success"]))
    res[f"{name}_false_removal"] = float(cat[f"{name}_lost"].sum() /
                                         max(cat[f"{name}_others"].sum(), 1))
  if "iou" in cat:
    res["mask_iou"] = float(np.mean(cat["iou"]))
    res["generated_mask_area"] = float(np.mean(cat["gen_area"]))
    res["removal_success"] = res["generated_removal_success"]
    res["false_removal"] = res["generated_false_removal"]
  return res, examples


_blur = jax.jit(masks_lib.blur_fill, static_argnums=2)
