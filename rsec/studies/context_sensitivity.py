"""Context sensitivity of scene classifiers, and removal-based augmentation (classification).

The library behind `experiments.context_sensitivity` (its command line, presets and outputs are in
that module's docstring); `run(config, workdir)` is what it calls.
"""
from __future__ import annotations

import os

import ml_collections
import numpy as np

from rsec import config as cfg_lib
from rsec import io
from rsec.context import augment, multilabel, sensitivity
from rsec.modes.scenes import scenes_mode
from rsec.data import scene_rules
from rsec.data import scenes
from rsec.training.checkpoint import Checkpointer

MODELS = ("regular", "augmented")


def validate(c: ml_collections.ConfigDict) -> None:
  cfg_lib.check(c, "seed", type_=int, low=0)
  cfg_lib.check(c, "data.size", type_=int, choices=(32, 64, 128))
  for k in ("train_size", "test_size", "ood_size"):
    cfg_lib.check(c, f"data.{k}", type_=int, low=1)
  cfg_lib.check(c, "classifier.steps", type_=int, low=1)
  cfg_lib.check(c, "classifier.batch_size", type_=int, low=1)
  cfg_lib.check(c, "classifier.lr", type_=float, low=0, low_exclusive=True)
  cfg_lib.check(c, "segmentation.steps", type_=int, low=0)
  cfg_lib.check(c, "segmentation.batch_size", type_=int, low=1)
  cfg_lib.check(c, "segmentation.lr", type_=float, low=0, low_exclusive=True)
  cfg_lib.check(c, "segmentation.width", type_=int, low=2)
  cfg_lib.check(c, "segmentation.stuff_swap", type_=float, low=0, high=1)
  cfg_lib.check(c, "augment.fraction", type_=float, low=0, high=1, low_exclusive=True)
  cfg_lib.check(c, "augment.source", type_=str, choices=sensitivity.SOURCES)
  cfg_lib.check(c, "augment.mode", type_=str, choices=("offline", "online"))
  if c.augment.mode == "online" and c.augment.source != "oracle":
    raise ValueError("config.augment.mode='online' removes objects inside the train step "
                     "by re-rendering the scene: it needs config.augment.source='oracle'")
  cfg_lib.check(c, "dilation", type_=int, low=0, high=8)
  cfg_lib.check(c, "eval_batch_size", type_=int, low=1)
  cfg_lib.check(c, "remover_workdir", type_=str)
  if not c.sources:
    raise ValueError("config.sources must name at least one removal source of "
                     f"{sensitivity.SOURCES}")
  for s in c.sources:
    if s not in sensitivity.SOURCES:
      raise ValueError(f"config.sources: unknown removal source {s!r}; expected one of "
                       f"{sensitivity.SOURCES}")
  if c.classifier.batch_size > c.data.train_size:
    raise ValueError(f"config.classifier.batch_size={c.classifier.batch_size} is larger than "
                     f"config.data.train_size={c.data.train_size}")
  rules = scene_rules.rules_from_config(c.data.rules)
  scene_rules.make_tables(rules)
  for name in c.context_classes:
    if name not in scene_rules.THINGS:
      raise ValueError(f"config.context_classes: unknown class {name!r}; expected some of "
                       f"{scene_rules.THINGS}")
  if c.context_classes:
    sensitivity.check_context_classes(sensitivity.context_table(rules), _context_classes(c))


def _context_classes(c):
  return [scene_rules.THINGS.index(n) for n in c.context_classes] or None


def _remover(c):
  """The remover when a source needs one (ValueError naming train_remover otherwise)."""
  needed = set(c.sources) | {c.augment.source}
  if needed <= {"oracle"}:
    return None
  from rsec.context.train_remover import TRAIN_COMMAND, load_remover
  if not c.remover_workdir:
    raise ValueError(f"removal sources {sorted(needed - {'oracle'})} need a trained remover: "
                     f"set config.remover_workdir to the workdir of "
                     f"`{TRAIN_COMMAND.format('DIR')}`")
  remover, rc = load_remover(c.remover_workdir)
  if rc.data.size != c.data.size:
    raise ValueError(f"the remover in {c.remover_workdir} was trained on {rc.data.size}x"
                     f"{rc.data.size} scenes, config.data.size={c.data.size}")
  if "generated" in needed and remover["mask_generator"] is None:
    raise ValueError(f"source 'generated' needs a mask generator; the remover in "
                     f"{c.remover_workdir} has none (mask_generator.steps=0)")
  return remover


def _train(c, name: str, images, labels, workdir: str, **online):
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints", name),
                      {"model": c.classifier.model, "part": name})
  try:
    return multilabel.train_multilabel(
        images, labels, model=c.classifier.model, seed=c.seed * 10 + MODELS.index(name),
        steps=c.classifier.steps, batch_size=c.classifier.batch_size, lr=c.classifier.lr,
        checkpointer=ckpt, progress=c.progress, desc=name, **online)
  finally:
    ckpt.close()


def run(c: ml_collections.ConfigDict, workdir: str) -> dict:
  validate(c)
  remover = _remover(c)  # before anything is written
  cfg_lib.check_same_run(workdir, c)  # the classifiers resume from their checkpoints
  rules = scene_rules.rules_from_config(c.data.rules)
  ctx = sensitivity.context_table(rules)
  io.prepare_workdir(workdir)
  if io.is_chief():
    io.write_text_atomic(os.path.join(workdir, "config.json"), cfg_lib.to_json(c))
  split = lambda s, n: scenes.scene_split(s, n, c.seed, rules, c.data.size)  # noqa: E731
  train, test, ood = (split("train", c.data.train_size), split("test", c.data.test_size),
                      split("ood", c.data.ood_size))
  aug = None                        # offline: removed copies made once, added to the data
  if c.augment.mode == "offline":
    aug = sensitivity.removal_augment(train, ctx, c.seed, c.augment.fraction,
                            source=c.augment.source, remover=remover, dilation=c.dilation)
  states = {"regular": _train(c, "regular", train["image"], train["labels"], workdir)}
  if c.augment.mode == "online":    # fresh oracle removals in every step (context_augment)
    states["augmented"] = _train(
        c, "augmented", train["image"], train["labels"], workdir,
        perturb=scenes_mode("context_augment", c.data, c.augment.fraction).perturb,
        extra=augment.flatten_layout(train["layout"]))
  else:
    states["augmented"] = _train(c, "augmented",
                                 np.concatenate([train["image"], aug["image"]]),
                                 np.concatenate([train["labels"], aug["labels"]]), workdir)

  edited = {}
  for source in c.sources:
    cases = sensitivity.build_cases(test["labels"], ctx, control=source != "oracle",
                          context_classes=_context_classes(c))
    edited[source] = (cases, sensitivity.apply_removals(test, cases, source, remover=remover,
                                              dilation=c.dilation))
  results: dict = {k: {} for k in ("map_in_context", "map_out_of_context", "ap_in_context",
                                   "violation_rate", "flip_rate", "s_object_without_context",
                                   "s_context_without_object", "bias", "score_change",
                                   "artifact_control")}
  for name, state in states.items():
    score = multilabel.scores_fn(state)
    predict = lambda x: multilabel.predict(score, x, c.eval_batch_size)  # noqa: E731
    clean = predict(test["image"])
    results["map_in_context"][name], results["ap_in_context"][name] = sensitivity.mean_ap(
        clean, test["labels"])
    results["map_out_of_context"][name] = sensitivity.mean_ap(predict(ood["image"]),
                                                              ood["labels"])[0]
    for source, (cases, images) in edited.items():
      m = sensitivity.sensitivity_metrics(clean, cases, predict(images), ctx)
      for key in ("violation_rate", "flip_rate", "s_object_without_context",
                  "s_context_without_object", "bias", "score_change"):
        results[key].setdefault(name, {})[source] = m[key]
      if "artifact" in m:
        results["artifact_control"].setdefault(name, {})[source] = m["artifact"]
  if c.segmentation.steps:
    results["segmentation"] = _segmentation(c, workdir, train, test, ood, aug, edited, ctx)
  results["augmented_examples"] = 0 if aug is None else int(len(aug["labels"]))
  results["cases"] = {s: {"object": int((cs["kind"] == sensitivity.OBJECT).sum()),
                          "context": int((cs["kind"] == sensitivity.CONTEXT).sum())}
                      for s, (cs, _) in edited.items()}
  if io.is_chief():
    io.write_json_atomic(os.path.join(workdir, "results.json"), results)
    from rsec.context import sensitivity_report
    sensitivity_report.write(workdir, c, results, test, edited)
  return results


def _segmentation(c, workdir, train, test, ood, aug, edited, ctx) -> dict:
  """Regular and removal-augmented segmenters: mIoU in and out of context, and the pixel
  flip rate / revealed-region mIoU of every object removal, per removal source."""
  from rsec.context import segmentation as seg
  sc = c.segmentation
  data = {"regular": (train["image"], train["semantic"], {})}
  if c.augment.mode == "online":    # context_augment with the oracle's labels behind
    data["augmented"] = (train["image"], train["semantic"], dict(
        perturb=scenes_mode("context_augment", c.data, c.augment.fraction,
                            semantic_key="label").perturb,
        extra={"targets": train["labels"], **augment.flatten_layout(train["layout"])}))
  else:
    data["augmented"] = (np.concatenate([train["image"], aug["image"]]),
                         np.concatenate([train["semantic"], aug["semantic"]]), {})
  if sc.stuff_swap:                 # diagnostic: things moved onto other scenes' stuff
    data["stuff_swapped"] = (train["image"], train["semantic"], dict(
        perturb=scenes_mode("stuff_swap", c.data, sc.stuff_swap, semantic_key="label").perturb,
        extra=augment.flatten_layout(train["layout"])))
  removals = {}                     # per source: the object cases and their oracle truth
  for source, (cases, images) in edited.items():
    obj = np.flatnonzero(cases["kind"] == sensitivity.OBJECT)
    sub = {k: v[obj] for k, v in cases.items()}
    removals[source] = (sub, images[obj], sensitivity.oracle_scenes(test, sub))
  out = {}
  for i, (name, (x, y, online)) in enumerate(data.items()):
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints", f"segmenter_{name}"),
                        {"part": f"segmenter_{name}"})
    try:
      state = seg.train_segmenter(x, y, seed=c.seed * 10 + 5 + i, steps=sc.steps,
                                  batch_size=sc.batch_size, lr=sc.lr, width=sc.width,
                                  checkpointer=ckpt, progress=c.progress,
                                  desc=f"segmenter {name}", **online)
    finally:
      ckpt.close()
    pred = seg.predict(state, test["image"], c.eval_batch_size)
    pred_ood = seg.predict(state, ood["image"], c.eval_batch_size)

    def per_class(p, t):
      names = scene_rules.THINGS + scene_rules.STUFF
      return {n: float(v) for n, v in zip(names, seg.iou_per_class(p, t))
              if np.isfinite(v)}
    r = {"miou_in_context": seg.miou(pred, test["semantic"]),
         "miou_out_of_context": seg.miou(pred_ood, ood["semantic"]),
         "iou_in_context": per_class(pred, test["semantic"]),
         "iou_out_of_context": per_class(pred_ood, ood["semantic"]),
         "pixel_flip_rate": {}, "revealed_miou": {}}
    for source, (sub, images, oracle) in removals.items():
      effects = seg.removal_effects(pred[sub["img"]],
                                    seg.predict(state, images, c.eval_batch_size),
                                    oracle["removed"], test["semantic"][sub["img"]],
                                    oracle["semantic"], dilation=max(c.dilation, 1))
      r["pixel_flip_rate"][source] = effects["pixel_flip_rate"]
      r["revealed_miou"][source] = effects["revealed_miou"]
    out[name] = r
  return out
