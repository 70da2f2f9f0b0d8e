"""The train_remover entry point: config validation (fast) and a tiny end-to-end run (slow)."""
import json
import os

import jax
import numpy as np
import pytest

from configs.train_remover import get_config
from rsec.context import train_remover as remover_lib
from rsec.context.train_remover import validate_config
from rsec.data import scenes
from tests.reliability import kill_harness


def test_config_validation():
  validate_config(get_config("quick"))
  validate_config(get_config("paper"))
  c = get_config("quick")
  c.data.rules.pairs = (("car", "sign", 1.5),)
  with pytest.raises(ValueError, match="probability"):
    validate_config(c)
  c = get_config("quick")
  c.data.rules.scene_things = (("car",), ("car",), ("tree",))
  with pytest.raises(ValueError, match="cannot be satisfied"):
    validate_config(c)
  c = get_config("quick")
  c.classifier_eval.data = "test"
  with pytest.raises(ValueError, match="config.classifier_eval.data"):
    validate_config(c)
  c = get_config("quick")
  c.classifier_mask.augment = 1.5
  with pytest.raises(ValueError, match="config.classifier_mask.augment"):
    validate_config(c)
  c = get_config("quick")
  c.inpainter.steps = -1
  with pytest.raises(ValueError, match="config.inpainter.steps"):
    validate_config(c)
  with pytest.raises(ValueError, match="preset"):
    get_config("huge")


@pytest.mark.slow
def test_end_to_end_and_resume(tmp_path):
  """The entry point end to end in a subprocess; then a second run SIGKILLed while the
  mask generator trains (after one of its checkpoints) and rerun must end bit-identical."""
  target = kill_harness.REMOVER
  workdir, killed = str(tmp_path / "run"), str(tmp_path / "killed")
  kill_harness.run_to_end(workdir, None, target)
  for name in ("results.json", "report.md", "removals.png", "scenes.png", "config.json",
               "logs/inpainter/metrics.jsonl", "logs/mask_generator/metrics.jsonl"):
    assert os.path.exists(os.path.join(workdir, name)), name
  with open(os.path.join(workdir, "results.json")) as f:
    r = json.load(f)
  for k in ("inpainter_psnr_hole", "baseline_psnr_hole", "removal_success", "false_removal",
            "mask_iou", "eval_images"):
    assert k in r
  for part in ("classifier_mask", "classifier_eval", "inpainter", "mask_generator"):
    assert os.listdir(os.path.join(workdir, "checkpoints", part))
  assert kill_harness.run_with_kills(killed, None, kills=1, target=target,
                                     aims=("training",)) == ["training"]
  assert kill_harness.compare(workdir, killed, target) == []


def test_reference_classifier_data():
  """'mixed' = the first half of the in-context train split + as many out-of-context scenes."""
  c = get_config("quick")
  c.data.train_size = 64
  train = scenes.scene_split("train", 64, c.seed, size=32)
  assert remover_lib.classifier_data(c, train, "train") is train
  ood = remover_lib.classifier_data(c, train, "ood_train")
  assert ood["image"].shape == train["image"].shape
  mixed = remover_lib.classifier_data(c, train, "mixed")
  assert mixed["image"].shape == train["image"].shape
  assert mixed["labels"].shape == train["labels"].shape
  np.testing.assert_array_equal(mixed["image"][:32], train["image"][:32])
  np.testing.assert_array_equal(mixed["image"][32:], ood["image"][:32])
  # The layouts ride along (online removal augmentation re-renders them): row for row.
  for k, v in mixed["layout"].items():
    np.testing.assert_array_equal(v[:32], train["layout"][k][:32], err_msg=k)
    np.testing.assert_array_equal(v[32:], ood["layout"][k][:32], err_msg=k)
  again = scenes.render(jax.tree.map(np.asarray, mixed["layout"]), size=32)
  np.testing.assert_allclose(np.asarray(again["image"]), mixed["image"], atol=1e-6)
