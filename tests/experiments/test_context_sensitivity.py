"""The context_sensitivity entry point on tiny SCENES, and its bad input."""
import json
import os

import numpy as np
import pytest

from configs.context_sensitivity import get_config
from rsec.studies import context_sensitivity as cs
from rsec.data import scene_rules as R


def tiny_config():
  c = get_config("quick")
  c.data.update(train_size=256, test_size=32, ood_size=32)
  c.classifier.update(model="mlp", steps=10, batch_size=32)
  c.segmentation.update(steps=4, batch_size=32, width=8)
  c.eval_batch_size = 64
  c.progress = False
  return c


@pytest.mark.slow
def test_end_to_end_and_resume(tmp_path):
  workdir = str(tmp_path / "cs")
  r = cs.run(tiny_config(), workdir)
  for name in ("config.json", "results.json", "report.md", "score_change.png",
               "violation_rate.png", "removals.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  saved = json.load(open(os.path.join(workdir, "results.json")))
  for model in ("regular", "augmented"):
    assert 0 <= saved["map_in_context"][model] <= 1
    assert 0 <= saved["map_out_of_context"][model] <= 1
    v = saved["violation_rate"][model]["oracle"]
    assert set(v) == {"car", "sign", "chair", "table", "dog", "person", "mean"}
    assert all(np.isnan(x) or 0 <= x <= 1 for x in v.values())
    assert len(saved["score_change"][model]["oracle"]) == 8
  assert saved["augmented_examples"] == 0     # online augmentation (the default)
  assert set(saved["segmentation"]) == {"regular", "augmented", "stuff_swapped"}
  for model in ("regular", "augmented", "stuff_swapped"):
    s = saved["segmentation"][model]
    assert 0 <= s["miou_in_context"] <= 1 and 0 <= s["miou_out_of_context"] <= 1
    iou = np.asarray(list(s["iou_out_of_context"].values()))
    assert set(s["iou_out_of_context"]) <= set(R.THINGS + R.STUFF) and len(iou) > 8
    assert np.mean(iou) == pytest.approx(s["miou_out_of_context"])
    assert 0 <= s["pixel_flip_rate"]["oracle"]["all"] <= 1
    assert 0 <= s["revealed_miou"]["oracle"] <= 1
  assert saved["cases"]["oracle"]["object"] > saved["cases"]["oracle"]["context"] > 0
  report = open(os.path.join(workdir, "report.md")).read()
  assert "violation rate" in report and "## Segmentation" in report
  assert "IoU per class" in report and "stuff_swapped" in report
  # A rerun resumes both classifiers from their checkpoints: the same numbers.
  again = cs.run(tiny_config(), workdir)
  assert again["map_in_context"] == r["map_in_context"]


@pytest.mark.slow
@pytest.mark.parametrize("mode, says", [("online", "context_augment"),
                                        ("offline", "extra images")])
def test_augmentation_modes(tmp_path, mode, says):
  """'online' trains the augmented classifier with context_augment; 'offline' on the
  training set plus removed copies."""
  c = tiny_config()
  c.augment.mode = mode
  c.segmentation.steps = 2
  workdir = str(tmp_path / "cs")
  r = cs.run(c, workdir)
  assert 0 <= r["map_in_context"]["augmented"] <= 1
  assert r["map_in_context"]["augmented"] != r["map_in_context"]["regular"]
  assert says in open(os.path.join(workdir, "report.md")).read()
  assert (r["augmented_examples"] > 0) == (mode == "offline")


@pytest.mark.parametrize("change, match", [
    (lambda c: setattr(c, "sources", ("oracle", "gt")), "experiments.train_remover"),
    (lambda c: (setattr(c.augment, "mode", "offline"), setattr(c.augment, "source", "generated")),
     "experiments.train_remover"),
    (lambda c: (setattr(c, "sources", ("gt",)), setattr(c, "remover_workdir", "/nope")),
     "experiments.train_remover"),
    (lambda c: setattr(c, "sources", ("photoshop",)), "photoshop"),
    (lambda c: setattr(c, "sources", ()), "config.sources"),
    (lambda c: setattr(c.data, "test_size", 0), "config.data.test_size"),
    (lambda c: setattr(c.augment, "fraction", 1.5), "config.augment.fraction"),
    (lambda c: setattr(c.augment, "mode", "sometimes"), "config.augment.mode"),
    (lambda c: (setattr(c.augment, "mode", "online"), setattr(c.augment, "source", "gt")),
     "augment.source='oracle'"),
    (lambda c: setattr(c.segmentation, "steps", -1), "config.segmentation.steps"),
    (lambda c: setattr(c.segmentation, "stuff_swap", 2.0), "config.segmentation.stuff_swap"),
    (lambda c: setattr(c, "context_classes", ("car", "clock")), "without a context rule"),
    (lambda c: setattr(c, "context_classes", ("spaceship",)), "spaceship"),
])
def test_bad_input_fails_before_any_work(tmp_path, change, match):
  c = tiny_config()
  change(c)
  workdir = str(tmp_path / "cs")
  with pytest.raises(ValueError, match=match):
    cs.run(c, workdir)
  assert not os.path.exists(workdir)
