"""Semantic segmentation on SCENES: training, mIoU, and the context measures of removal.

Labels are SCENES semantic maps (things 0..K-1, stuff K..K+5). For a removal, the pixel
flip rate is the share of pixels outside the removed objects' dilated (amodal) masks whose
predicted label changes, overall and per ground-truth stuff class: a segmenter that reads
a sidewalk off the car next to it changes there. The revealed-region mIoU scores the
prediction where the object was against the oracle's labels of what lies behind it.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rsec.context import masks as masks_lib
from rsec.data import scene_rules as R
from rsec.models.segmenter import PyramidSegmenter
from rsec.training.loop import fit
from rsec.training.state import TrainState, create_train_state


def pixel_cross_entropy(logits: jax.Array, batch: dict) -> jax.Array:
  """Mean per-pixel cross-entropy: logits [B, H, W, C], batch['label'] [B, H, W]."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()


def train_segmenter(images: np.ndarray, semantic: np.ndarray, *, seed: int, steps: int,
                    batch_size: int, lr: float = 3e-3, width: int = 32, checkpointer=None,
                    progress: bool = False, desc: str = "segmenter", perturb=None,
                    extra: dict | None = None) -> TrainState:
  """Trains a `PyramidSegmenter` on images [N, H, W, 3] and semantic maps [N, H, W].

  perturb / extra: a training mode's batch perturbation (its per-pixel labels are under
  'label') and the per-example arrays it needs, as in `multilabel.train_multilabel`.
  """
  if semantic.shape != images.shape[:3]:
    raise ValueError(f"semantic must have shape {images.shape[:3]} (one label per pixel), "
                     f"got {semantic.shape}")
  net = PyramidSegmenter(num_classes=R.NUM_LABELS, width=width)
  tx = optax.adam(optax.cosine_decay_schedule(lr, steps))
  state = create_train_state(net, tx, jax.random.key(seed), (1,) + images.shape[1:])
  data = {"image": images, "label": semantic.astype(np.int32), **(extra or {})}
  state, _ = fit(state, data, key=jax.random.key(seed + 1), batch_size=batch_size,
                 num_steps=steps, seed=seed, loss_fn=pixel_cross_entropy, perturb=perturb,
                 steps_per_call=10, checkpointer=checkpointer,
                 checkpoint_every=max(steps, 1), progress=progress, desc=desc)
  return state


def predict(state: TrainState, images: np.ndarray, batch_size: int = 128) -> np.ndarray:
  """Predicted label maps [N, H, W] (int32)."""
  from rsec.context.multilabel import predict as batched
  logits = state.logits_fn()
  return batched(lambda x: jnp.argmax(logits(x), -1).astype(jnp.int32), images, batch_size)


def _confusion(pred, target, where, num_classes):
  pred, target = np.asarray(pred).ravel(), np.asarray(target).ravel()
  if where is not None:
    keep = np.asarray(where, bool).ravel()
    pred, target = pred[keep], target[keep]
  return np.bincount(target * num_classes + pred, minlength=num_classes ** 2).reshape(
      num_classes, num_classes)


def iou_per_class(pred: np.ndarray, target: np.ndarray, where: np.ndarray | None = None,
                  num_classes: int = R.NUM_LABELS) -> np.ndarray:
  """IoU of every class [num_classes] (NaN for classes absent from `target`)."""
  conf = _confusion(pred, target, where, num_classes)
  inter = np.diag(conf)
  union = conf.sum(0) + conf.sum(1) - inter
  return np.where(conf.sum(1) > 0, inter / np.maximum(union, 1), np.nan)


def miou(pred: np.ndarray, target: np.ndarray, where: np.ndarray | None = None,
         num_classes: int = R.NUM_LABELS) -> float:
  """Mean IoU over the classes present in `target` (optionally only at pixels `where`)."""
  iou = iou_per_class(pred, target, where, num_classes)
  return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def removal_effects(before: np.ndarray, after: np.ndarray, removed: np.ndarray,
                    target: np.ndarray, oracle_semantic: np.ndarray | None = None,
                    dilation: int = 2) -> dict:
  """Context measures of object removals.

  before/after: predictions [M, H, W] on the images and their edited versions;
  removed: [M, H, W] bool, where objects were removed; target: ground-truth labels of the
  original images [M, H, W]; oracle_semantic: labels of the edited scenes [M, H, W].
  Returns pixel_flip_rate (overall and per stuff name) and revealed_miou.
  """
  far = ~np.asarray(masks_lib.dilate(jnp.asarray(removed, jnp.float32), dilation) > 0)
  flips = (before != after) & far
  out = {"pixel_flip_rate": {"all": float(flips.sum() / max(far.sum(), 1))}}
  for s, name in enumerate(R.STUFF):
    sel = far & (target == R.NUM_THINGS + s)
    if sel.any():
      out["pixel_flip_rate"][name] = float(flips[sel].mean())
  if oracle_semantic is not None:
    out["revealed_miou"] = miou(after, oracle_semantic, removed)
  return out
