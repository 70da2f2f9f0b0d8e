"""The attack_eval entry point on a classifier that train_classifier left in a workdir."""
import json
import os

import pytest

from configs.attack_eval import get_config
from rsec.studies import attack_eval, train_classifier
from tests.experiments.test_train_classifier import small_config


@pytest.fixture(scope="module")
def classifier_workdir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("clf"))
  train_classifier.run(small_config(epochs=10), workdir)
  return workdir


def small_eval_config(classifier_workdir):
  c = get_config("quick")
  c.classifier_workdir = classifier_workdir
  c.num_examples = 100
  c.batch_size = 100
  del c.attacks["apgd_dlr"]  # compilation dominates here: keep one attack of each kind
  c.cascade = ("apgd_ce", "square")
  for name, steps in (("pgd", 10), ("paper", 10), ("apgd_ce", 10), ("square", 50)):
    c.attacks[name].steps = steps
  c.attacks.paper.restarts = 2
  c.curve.attack.steps = 5
  c.curve.eps_grid = (0.0, 0.1, 0.3, 1.0)
  c.sanity.num_examples = 40
  c.sanity.steps = 5
  c.sanity.square_steps = 30
  return c


def test_attack_eval_end_to_end(classifier_workdir, tmp_path):
  out = str(tmp_path / "eval")
  r = attack_eval.run(small_eval_config(classifier_workdir), out)
  for name in ("results.json", "report.md", "robust_vs_eps.png", "examples.png", "config.json"):
    assert os.path.getsize(os.path.join(out, name)) > 0
  saved = json.load(open(os.path.join(out, "results.json")))
  assert saved["clean_accuracy"] > 0.5
  names = ["fgsm", "pgd", "paper", "apgd_ce", "square", "cascade"]
  for n in names:
    assert 0.0 <= saved[f"robust_accuracy/{n}"] <= saved["clean_accuracy"]
    assert f"success_rate/{n}" in saved and f"mean_linf/{n}" in saved
    if saved[f"success_rate_any/{n}"] > 0:
      assert saved[f"mean_linf/{n}"] <= 0.3 + 1e-5
  worst = saved["robust_accuracy/worst_case"]
  assert worst <= min(saved[f"robust_accuracy/{n}"] for n in names)
  assert saved["robust_accuracy/pgd"] <= saved["robust_accuracy/fgsm"] + 0.02
  curve = saved["curve"]["robust_accuracy"]
  assert curve[0] == pytest.approx(saved["clean_accuracy"])
  assert all(b <= a + 0.02 for a, b in zip(curve, curve[1:]))
  assert curve[-1] <= 0.05  # eps = 1 contains every image
  report = open(os.path.join(out, "report.md")).read()
  assert "Sanity checks" in report and "worst_case" in report
  # A rerun of the finished evaluation returns its results without attacking again.
  mtime = os.path.getmtime(os.path.join(out, "results.json"))
  again = attack_eval.run(small_eval_config(classifier_workdir), out)
  assert json.dumps(again, sort_keys=True) == json.dumps(saved, sort_keys=True)
  assert os.path.getmtime(os.path.join(out, "results.json")) == mtime


def test_missing_classifier_names_the_command(tmp_path):
  c = small_eval_config(str(tmp_path / "nothing_here"))
  with pytest.raises(ValueError, match="experiments.train_classifier"):
    attack_eval.run(c, str(tmp_path / "out"))


def test_unknown_attack_name(classifier_workdir, tmp_path):
  c = small_eval_config(classifier_workdir)
  c.attacks.pgd.name = "deepfool"
  with pytest.raises(ValueError, match="config.attacks.pgd.name must be one of"):
    attack_eval.run(c, str(tmp_path / "out"))
