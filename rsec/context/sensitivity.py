"""The context-sensitivity framework (classification): remove each object, and separately
its context, from every test image, and measure how the classifier's scores move.

Terms (written into the experiment's report):
- context of class c: the things the context rules pair with c (either direction);
- object case (i, c): image i with every c removed, its context kept ("context only");
- context case (i, c): image i with c's context removed, c kept ("object only"); exists
  where some of c's context is in the image;
- control case (i, c): a region of the same shape and area as c's mask, moved onto stuff
  away from the objects, filled by the same remover: what changes there is the remover's
  artefact, not context (in-painter sources only; oracle removals have no artefact).
Removal sources: 'oracle' (the scene re-rendered without the objects: exact), 'gt'
(ground-truth masks + in-painter), 'generated' (mask generator + in-painter).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rsec.context import masks as masks_lib
from rsec.context.removal import generate_masks_jit, inpaint_jit
from rsec.data import scene_rules as R
from rsec.data import scenes

SOURCES = ("oracle", "gt", "generated")
OBJECT, CONTEXT, CONTROL = 0, 1, 2


def context_table(rules: R.ContextRules) -> np.ndarray:
  """ctx [K, K] bool: ctx[c, k] where the rules pair k with c (either direction)."""
  partner = R.make_tables(rules)["partner"]
  ctx = np.zeros((R.NUM_THINGS, R.NUM_THINGS), bool)
  for a, b in enumerate(partner):
    if b >= 0:
      ctx[a, b] = ctx[b, a] = True
  return ctx


def check_context_classes(ctx: np.ndarray, classes) -> None:
  """ValueError for a class asked for context removal that no context rule ties to anything."""
  bad = [R.THINGS[c] if 0 <= c < len(R.THINGS) else c for c in classes
         if not (0 <= c < len(ctx) and ctx[c].any())]
  if bad:
    raise ValueError(f"context removal asked for classes without a context rule: {bad}; "
                     f"classes with context: {[R.THINGS[c] for c in range(len(ctx)) if ctx[c].any()]}")


def build_cases(labels: np.ndarray, ctx: np.ndarray, *, control: bool = False,
                context_classes=None) -> dict:
  """Every (image, present class) object case, context case where context is present, and
  (optionally) control case. labels [N, K] in {0, 1}; context_classes: the classes whose
  context is removed (default: every class with a context rule; ValueError for a class
  without one). Returns img [M], cls [M], kind [M], remove [M, K] bool (classes removed;
  for control cases the class whose mask is moved)."""
  if context_classes is None:
    context_classes = np.flatnonzero(ctx.any(1))
  check_context_classes(ctx, context_classes)
  with_context = set(int(c) for c in context_classes)
  img, cls, kind, remove = [], [], [], []
  for i, c in zip(*np.nonzero(labels > 0)):
    present = labels[i] > 0
    cases = [(OBJECT, np.eye(len(ctx), dtype=bool)[c])]
    if c in with_context and (ctx[c] & present).any():
      cases.append((CONTEXT, ctx[c] & present))
    if control:
      cases.append((CONTROL, np.eye(len(ctx), dtype=bool)[c]))
    for k, r in cases:
      img.append(i), cls.append(c), kind.append(k), remove.append(r)
  if not img:
    raise ValueError("no objects in the test images: the framework needs a non-empty test "
                     "split with objects")
  return {"img": np.asarray(img, np.int32), "cls": np.asarray(cls, np.int32),
          "kind": np.asarray(kind, np.int32), "remove": np.asarray(remove, bool)}


def _slot_remove(layout: dict, remove: np.ndarray) -> np.ndarray:
  """[B, S] slots whose class is in the removed set [B, K]."""
  cls = np.asarray(layout["cls"])
  return np.asarray(layout["valid"]) & np.take_along_axis(remove, np.clip(cls, 0, None), 1)


def _control_mask(masks: np.ndarray, shown: np.ndarray, slots: np.ndarray) -> np.ndarray:
  """The target's mask [H, W] moved (cyclic shifts) to overlap the objects least."""
  obj = (masks & shown[:, None, None]).any(0)
  m = (masks & slots[:, None, None]).any(0)
  h, w = m.shape
  best, best_overlap = m, np.inf
  for dy in range(0, h, max(1, h // 8)):
    for dx in range(0, w, max(1, w // 8)):
      moved = np.roll(m, (dy, dx), (0, 1))
      overlap = (moved & obj).sum()
      if overlap < best_overlap and (dy or dx):
        best, best_overlap = moved, overlap
  return best


def apply_removals(data: dict, cases: dict, source: str, *, remover: dict | None = None,
                   dilation: int = 1, batch_size: int = 128) -> np.ndarray:
  """The edited image of every case: [M, H, W, 3] float32.

  data: a SCENES split (`scene_split` rows: image, masks, shown, layout).
  remover: {'inpainter': GanState, 'mask_generator': GanState | None} for 'gt' and
  'generated' (see `rsec.context.train_remover.load_remover`).
  """
  if source not in SOURCES:
    raise ValueError(f"removal source must be one of {SOURCES}, got {source!r}")
  if source != "oracle" and (remover is None or remover.get("inpainter") is None):
    raise ValueError(f"removal source {source!r} needs a trained in-painter (remover=)")
  if source == "generated" and remover.get("mask_generator") is None:
    raise ValueError("removal source 'generated' needs a trained mask generator")
  out = []
  size = data["image"].shape[1]
  for s in range(0, len(cases["img"]), batch_size):
    sl = slice(s, s + batch_size)
    idx, remove, kind = cases["img"][sl], cases["remove"][sl], cases["kind"][sl]
    x = data["image"][idx]
    layout = jax.tree.map(lambda a: np.asarray(a)[idx], data["layout"])
    slots = _slot_remove(layout, remove)
    if source == "oracle":
      edited = np.array(scenes.oracle_removal(layout, jnp.asarray(slots), size)["image"])
      edited[kind == CONTROL] = x[kind == CONTROL]  # nothing to control for: exact removal
      out.append(edited)
      continue
    masks, shown = data["masks"][idx], data["shown"][idx]
    if source == "gt":
      m = (masks & (slots & shown)[:, :, None, None]).any(1)
    else:
      m = np.zeros(x.shape[:3], bool)
      for k in np.flatnonzero(remove.any(0)):
        rows = remove[:, k]
        gen = np.asarray(generate_masks_jit(remover["mask_generator"], jnp.asarray(x),
                                  jnp.full((len(x),), k, jnp.int32))) > 0.5
        m |= gen & rows[:, None, None]
    for j in np.flatnonzero(kind == CONTROL):
      m[j] = _control_mask(masks[j], shown[j], slots[j])
    m = np.asarray(masks_lib.dilate(jnp.asarray(m, jnp.float32), dilation))
    filled = np.asarray(inpaint_jit(remover["inpainter"], jnp.asarray(x), jnp.asarray(m)))
    keep = m.reshape(len(m), -1).sum(1) > 0
    out.append(np.where(keep[:, None, None, None], filled, x))
  return np.concatenate(out)


def oracle_scenes(data: dict, cases: dict, batch_size: int = 128) -> dict[str, np.ndarray]:
  """What the oracle knows about each case's removal: 'image' [M, H, W, 3] and 'semantic'
  [M, H, W] labels of the scene without the removed objects, and 'removed' [M, H, W] bool,
  every pixel the removed objects covered (amodal masks: the only pixels removal changes)."""
  size = data["image"].shape[1]
  img, sem, rem = [], [], []
  for s in range(0, len(cases["img"]), batch_size):
    idx, remove = cases["img"][s:s + batch_size], cases["remove"][s:s + batch_size]
    layout = jax.tree.map(lambda a: np.asarray(a)[idx], data["layout"])
    slots = _slot_remove(layout, remove)
    out = scenes.oracle_removal(layout, jnp.asarray(slots), size)
    img.append(np.asarray(out["image"]))
    sem.append(np.asarray(out["semantic"]))
    rem.append((np.asarray(data["amodal"][idx]) & slots[:, :, None, None]).any(1))
  return {"image": np.concatenate(img), "semantic": np.concatenate(sem),
          "removed": np.concatenate(rem)}


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
  """AP of one class: mean precision at each positive, ranked by score (NaN: no positive)."""
  positive = np.asarray(positive, bool)
  if not positive.any():
    return float("nan")
  order = np.argsort(-np.asarray(scores), kind="stable")
  hits = positive[order]
  precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
  return float(precision[hits].mean())


def mean_ap(scores: np.ndarray, labels: np.ndarray) -> tuple[float, list[float]]:
  aps = [average_precision(scores[:, k], labels[:, k] > 0) for k in range(labels.shape[1])]
  return float(np.nanmean(aps)), aps


def _nanmean(v) -> float:
  v = np.asarray(v, np.float64)
  return float(v.mean()) if v.size else float("nan")


def sensitivity_metrics(clean: np.ndarray, cases: dict, after: np.ndarray, ctx: np.ndarray,
                        threshold: float = 0.5) -> dict[str, Any]:
  """Per-class context measures from clean scores [N, K] and scores after removal [M, K].

  violation_rate[c]: over images with both an object and a context case for c, the share
    where c scores at least as high with only its context as with only the object;
  flip_rate[c]: over context cases of c the classifier detected (clean score >= threshold),
    the share where removing the context drops c below the threshold;
  s_object_without_context[c] / s_context_without_object[c]: mean score of c in its
    context cases / object cases;
  bias['b|z']: Singh et al.'s bias on the counterfactual pairs: mean clean score of b over
    images with b and z, divided by the mean score of b once z is removed;
  score_change[r][k]: mean change of class k's score when class r is removed (object cases);
  artifact: mean |score change| of the other present classes in control cases, beside the
    same in object cases (a change of unrelated classes either way).
  """
  k_all = clean.shape[1]
  img, cls, kind = cases["img"], cases["cls"], cases["kind"]
  s_after = after[np.arange(len(cls)), cls]
  s_clean = clean[img, cls]
  out: dict[str, Any] = {k: {} for k in ("violation_rate", "flip_rate",
                                         "s_object_without_context",
                                         "s_context_without_object", "bias")}
  for c in range(k_all):
    obj = (cls == c) & (kind == OBJECT)
    con = (cls == c) & (kind == CONTEXT)
    name = R.THINGS[c]
    out["s_context_without_object"][name] = _nanmean(s_after[obj])
    out["s_object_without_context"][name] = _nanmean(s_after[con])
    if not ctx[c].any():
      continue
    by_img_obj = dict(zip(img[obj], s_after[obj]))
    pairs = [(by_img_obj[i], s) for i, s in zip(img[con], s_after[con]) if i in by_img_obj]
    out["violation_rate"][name] = _nanmean([a >= b for a, b in pairs])
    detected = con & (s_clean >= threshold)
    out["flip_rate"][name] = _nanmean(s_after[detected] < threshold)
    for z in np.flatnonzero(ctx[c]):
      sel = con & cases["remove"][:, z]
      if sel.any():
        out["bias"][f"{name}|{R.THINGS[z]}"] = float(s_clean[sel].mean()
                                                     / max(s_after[sel].mean(), 1e-6))
  bound = [R.THINGS[c] for c in range(k_all) if ctx[c].any()]
  for key in ("violation_rate", "flip_rate"):
    vals = [v for n, v in out[key].items() if n in bound and np.isfinite(v)]
    out[key]["mean"] = _nanmean(vals)
  change = np.full((k_all, k_all), np.nan)
  for r in range(k_all):
    sel = (cls == r) & (kind == OBJECT)
    if sel.any():
      change[r] = (after[sel] - clean[img[sel]]).mean(0)
  out["score_change"] = change.tolist()
  if (kind == CONTROL).any():
    out["artifact"] = {"control_change": _other_change(clean, cases, after, CONTROL),
                       "object_removal_change": _other_change(clean, cases, after, OBJECT)}
  return out


def _other_change(clean, cases, after, kind: int) -> float:
  """Mean |score change| of the classes not removed, over cases of one kind."""
  sel = cases["kind"] == kind
  d = np.abs(after[sel] - clean[cases["img"][sel]])
  return float(d[~cases["remove"][sel]].mean()) if sel.any() else float("nan")


def removal_augment(data: dict, ctx: np.ndarray, seed: int, fraction: float, *,
                    source: str = "oracle", remover: dict | None = None,
                    dilation: int = 1) -> dict[str, np.ndarray]:
  """Removal-based augmentation: for round(fraction * N) random training images, remove
  one random present object (half the time) or its context (the other half, where it has
  context in the image), and zero the removed classes' targets.

  Returns the new examples {'image' [M, H, W, 3], 'labels' [M, K], 'index' [M] (the
  training image each was made from), 'semantic' [M, H, W] (the oracle's labels of the
  edited scene; for in-painter sources, what the removal should have produced)} to add
  to the data.
  """
  if not 0 < fraction <= 1:
    raise ValueError(f"fraction must be in (0, 1], got {fraction}")
  rng = np.random.default_rng(seed)
  labels = data["labels"]
  has = np.flatnonzero(labels.sum(1) > 0)
  rows = rng.choice(has, size=max(1, int(round(fraction * len(has)))), replace=False)
  remove = np.zeros((len(rows), labels.shape[1]), bool)
  for j, i in enumerate(rows):
    c = rng.choice(np.flatnonzero(labels[i] > 0))
    context = ctx[c] & (labels[i] > 0)
    remove[j] = context if (context.any() and rng.random() < 0.5) else np.eye(len(ctx),
                                                                               dtype=bool)[c]
  cases = {"img": rows.astype(np.int32), "cls": np.zeros(len(rows), np.int32),
           "kind": np.full(len(rows), OBJECT, np.int32), "remove": remove}
  oracle = oracle_scenes(data, cases)
  images = (oracle["image"] if source == "oracle" else
            apply_removals(data, cases, source, remover=remover, dilation=dilation))
  return {"image": images, "labels": np.where(remove, 0.0, labels[rows]).astype(np.float32),
          "index": rows, "semantic": oracle["semantic"]}
