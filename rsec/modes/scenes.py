"""SCENES modes: online removal augmentation and the stuff-swap diagnostic.

They serve the SCENES trainers (the multi-label classifier, `rsec.context.multilabel`, and
the segmenter, `rsec.context.segmentation`), whose batches carry the scene layouts
(`rsec.context.augment.flatten_layout`); FONTS/TFDS classifiers (`train_classifier`) have
no layouts and refuse them. Settings (`config.training`):
  augment_prob   probability of an edit per image and step
  semantic_key   '' for a multi-label classifier; the batch key of per-pixel labels
                 ('label' for the segmenter), which become the edited scene's labels
and the rules and image size from `config.data` (rules, size).
"""
from __future__ import annotations

import ml_collections

from rsec.context import augment, sensitivity
from rsec.data import scene_rules
from rsec.modes.base import TRAINING_MODES, TrainingMode

SCENES_MODES = ("context_augment", "stuff_swap")


def _settings(config):
  t = config.training
  prob = float(t.get("augment_prob", 0.5))
  return prob, (t.get("semantic_key", "") or None), scene_rules.rules_from_config(
      config.data.get("rules", {}) or {})


@TRAINING_MODES.register("context_augment")
def context_augment(config, apply_fn) -> TrainingMode:
  """A fresh oracle removal of one present class (or its context) per image and step."""
  del apply_fn
  prob, semantic_key, rules = _settings(config)
  return TrainingMode(augment.make_context_augment(
      sensitivity.context_table(rules), int(config.data.size), prob, semantic_key))


@TRAINING_MODES.register("stuff_swap")
def stuff_swap(config, apply_fn) -> TrainingMode:
  """Things re-rendered where they stood on another scene type's stuff (a diagnostic)."""
  del apply_fn
  prob, semantic_key, rules = _settings(config)
  return TrainingMode(augment.make_stuff_swap(scene_rules.make_tables(rules)["bands"],
                                              int(config.data.size), prob, semantic_key))


def scenes_mode(mode: str, data: dict, prob: float, semantic_key: str = "") -> TrainingMode:
  """The SCENES mode `mode` for data settings `data` ({'size', 'rules'}) and `prob`."""
  if mode not in SCENES_MODES:
    raise ValueError(f"mode={mode!r} is not a SCENES mode; expected one of {list(SCENES_MODES)}")
  c = ml_collections.ConfigDict(dict(
      data=dict(size=data["size"], rules=dict(data.get("rules", {}))),
      training=dict(mode=mode, augment_prob=float(prob), semantic_key=semantic_key)))
  return TRAINING_MODES.get(mode)(c, None)
