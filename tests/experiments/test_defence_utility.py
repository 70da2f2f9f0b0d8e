"""The defence utility study: victim, outlier-exposure victim and misinformation model
trained through train_classifier, every defence measured, resumable."""
import json
import os

import pytest

from configs.defence_utility import get_config
from experiments import defence_utility


def tiny_config():
  c = get_config("quick")
  c.classifier.data.train_size, c.classifier.data.test_size = 1000, 200
  c.classifier.data.cache_dir = ""
  c.classifier.training.epochs = 4
  c.classifier.training.steps_per_call = 5
  c.classifier.eval.batch_size = 100
  c.num_examples, c.chunk = 200, 100
  c.progress = False
  c.grid = {"none": {}, "label": {}, "mad": {"eps": (0.1, 1.0)}, "mad_argmax": {"eps": (1.0,)},
            "reverse_sigmoid": {"beta": (0.5,)}, "adaptive_misinformation": {"tau": (0.5, 0.9)}}
  return c


@pytest.fixture(scope="module")
def study(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("defence_utility"))
  return workdir, defence_utility.run(tiny_config(), workdir)


def test_writes_every_defence_cell(study):
  workdir, r = study
  for name in ("config.json", "results.json", "report.md", "utility.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0
  # The tiny victim learned (chance .1): 4 epochs on 1,000 FONTS-hard images land near
  # .6, and float rounding (e.g. a conv's summation order) moves that by a few points.
  assert r["victim_accuracy"] > 0.5
  assert r["none/accuracy_loss"] == 0 and r["none/mean_l1"] < 1e-6
  assert r["label/accuracy_loss"] == 0 and r["label/flip_rate"] == 0
  assert r["mad_argmax/eps=1.0/flip_rate"] == 0 and r["mad_argmax/eps=1.0/mean_l1"] > 0.5
  assert r["mad/eps=0.1/mean_l1"] <= 0.1 + 1e-5
  assert r["mad/eps=1.0/flip_rate"] > r["mad/eps=0.1/flip_rate"]
  assert r["reverse_sigmoid/beta=0.5/flip_rate"] == 0
  assert "| mad/eps=0.1 |" in open(os.path.join(workdir, "report.md")).read()


def test_adaptive_misinformation_fires_out_of_distribution(study):
  workdir, r = study
  mis = json.load(open(os.path.join(workdir, "misinformation", "results.json")))
  assert mis["test_accuracy"] < 0.15        # trained to put little mass on the true class
  for tau, gap in (("0.5", 0.2), ("0.9", 0.0)):
    cell = f"adaptive_misinformation/tau={tau}"
    assert r[f"{cell}/misinformed_ood"] > r[f"{cell}/misinformed_in_distribution"] + gap
    assert r[f"{cell}/undefended_accuracy"] == r["victim_accuracy"]
  assert (r["adaptive_misinformation/tau=0.9/accuracy_loss"]
          > r["adaptive_misinformation/tau=0.5/accuracy_loss"])


def test_rerun_resumes_without_retraining_and_refuses_another_config(study):
  workdir, r = study
  stamp = {d: os.path.getmtime(os.path.join(workdir, d, "results.json"))
           for d in ("victim", "oe_victim", "misinformation")}
  again = defence_utility.run(tiny_config(), workdir)
  assert again == r
  for d, t in stamp.items():
    assert os.path.getmtime(os.path.join(workdir, d, "results.json")) == t
  c = tiny_config()
  c.outlier_weight = 1.0
  with pytest.raises(ValueError, match="another config"):
    defence_utility.run(c, workdir)
